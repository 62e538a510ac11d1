"""The general-capability set shipped with the project: the file (its size, categories and
answers), adding it to a team once (however many calls, however concurrent), and the API
endpoint and dashboard button that add it, for the team's members only."""

import json
import re
from collections import Counter

import pytest
from django.test import Client

from datasets_app.models import Dataset, DatasetVersion
from datasets_app.services import dataset_create
from evaluation.general import generate
from evaluation.general.services import NAME, general_set_version, general_version
from finetune_hub.errors import Conflict
from finetune_hub.models import Membership, Role
from tests.support.clients import ApiClient, make_user
from tests.support.concurrency import errors, race


def rows():
    return [json.loads(line) for line in generate.FILE.read_text().splitlines()]


def test_the_file_has_three_categories_of_distinct_questions():
    questions = rows()
    assert Counter(r["category"] for r in questions) == {
        "knowledge": 113,
        "arithmetic": 100,
        "instruction_following": 100,
    }
    assert len({r["instruction"] for r in questions}) == len(questions) == 313
    assert {r["split"] for r in questions} == {"eval"}
    # Short canonical answers that exact match can check: no padding, no sentence.
    assert all(r["output"] == r["output"].strip() and 0 < len(r["output"]) <= 30 for r in questions)
    assert all("Reply" in r["instruction"] for r in questions)


def test_the_generator_writes_the_committed_file_again(tmp_path):
    assert generate.write(tmp_path / "again.jsonl") == 313
    assert (tmp_path / "again.jsonl").read_bytes() == generate.FILE.read_bytes()


def test_the_generated_answers_are_right():
    operations = {"plus": int.__add__, "minus": int.__sub__, "times": int.__mul__}
    checked = Counter()
    for r in rows():
        q, answer = r["instruction"], r["output"]
        if m := re.fullmatch(r"What is (\d+) (plus|minus|times) (\d+)\? .*", q):
            assert answer == str(operations[m[2]](int(m[1]), int(m[3]))), q
            assert int(answer) >= 0
        elif m := re.search(r"the word (\w+) in capital letters", q):
            assert answer == m[1].upper()
        elif m := re.search(r"Write the word (\w+) backwards", q):
            assert answer == m[1][::-1]
        elif m := re.search(r"first letter of the word (\w+)\?", q):
            assert answer == m[1][0]
        elif m := re.search(r"How many letters are in the word (\w+)\?", q):
            assert answer == str(len(m[1]))
        elif m := re.search(r"Repeat the word (\w+) three times", q):
            assert answer == f"{m[1]} {m[1]} {m[1]}"
        else:
            assert r["category"] == "knowledge", q
            continue
        checked[r["category"]] += 1
    assert checked == {"arithmetic": 100, "instruction_following": 100}


def test_adding_the_set_twice_gives_the_same_version(team, owner):
    assert general_version(team=team) is None
    first = general_set_version(team=team, by=owner)
    assert general_set_version(team=team, by=owner) == first
    assert (first.dataset.name, first.dataset.task, first.format) == (
        NAME,
        "instruction",
        "instruction",
    )
    assert first.counts == {"train": 0, "eval": 313, "test": 0}
    assert DatasetVersion.objects.filter(dataset__team=team).count() == 1
    assert general_version(team=team) == first
    stored = {e.fields["instruction"]: e.fields["output"] for e in first.examples.all()}
    assert stored == {r["instruction"]: r["output"] for r in rows()}


def test_each_team_gets_its_own_copy(team, owner, outsider):
    other = outsider.memberships.get().team
    mine = general_set_version(team=team, by=owner)
    theirs = general_set_version(team=other, by=outsider)
    assert mine.dataset.team == team and theirs.dataset.team == other and mine != theirs


def test_a_dataset_of_another_task_by_that_name_is_a_conflict(team, owner):
    Dataset.objects.create(team=team, name=NAME, task="chat", created_by=owner)
    with pytest.raises(Conflict) as caught:
        general_set_version(team=team, by=owner)
    assert caught.value.status == 409
    assert "rename it" in caught.value.detail


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("dataset_exists", [False, True])
def test_concurrent_calls_add_the_set_once(team, owner, dataset_exists):
    """Bites on PostgreSQL (tests/support/concurrency.py). A new dataset's unique name makes the
    calls wait for the first; a dataset that exists already (the shipped file written
    again) relies on its row lock, without which each call would upload a version."""
    if dataset_exists:
        dataset_create(team=team, name=NAME, task="instruction", by=owner)
    outcomes = race(lambda: general_set_version(team=team, by=owner), [()] * 3)
    assert not errors(outcomes), outcomes
    assert len({v.pk for v in outcomes}) == 1
    assert Dataset.objects.filter(team=team, name=NAME).count() == 1
    assert DatasetVersion.objects.filter(dataset__team=team).count() == 1


def path(team):
    return f"/api/teams/{team.pk}/general-set"


def test_the_api_adds_the_set_once_and_the_evaluations_api_takes_it(api, team):
    first = api.post(path(team))
    assert first.status_code == 200, first.content
    body = first.json()
    assert (body["number"], body["format"], body["counts"]["eval"]) == (1, "instruction", 313)
    again = api.post(path(team))
    assert again.status_code == 200 and again.json()["number"] == 1
    version = general_version(team=team)
    assert body["dataset"] == version.dataset_id
    r = api.post(
        "/api/evaluations",
        {
            "subject": {"base_model": "embedded"},
            "dataset_version": version.pk,
            "metrics": ["exact_match"],
        },
    )
    assert r.status_code == 201, r.content
    assert (r.json()["split"], r.json()["samples_total"]) == ("eval", 313)


def test_the_api_refuses_outsiders_anonymous_callers_and_viewers(
    team, outsider_api, anon_api, owner
):
    r = outsider_api.post(path(team))
    assert r.status_code == 404 and r.json()["detail"] == "Team not found"
    assert anon_api.post(path(team)).status_code == 401
    viewer = make_user("viewer")
    Membership.objects.create(team=team, user=viewer, role=Role.VIEWER)
    assert ApiClient(viewer).post(path(team)).status_code == 403
    assert not Dataset.objects.filter(team=team).exists()


def test_the_evaluations_page_offers_the_button_and_it_adds_the_set(browser_client, team):
    page = browser_client.get("/evaluations/").content.decode()
    assert "Add the general-capability set to Acme" in page
    assert "scored by chrf in the forgetting check" in page  # the card's metric, no other
    assert f'action="/evaluations/general-set/{team.pk}/"' in page
    r = browser_client.post(f"/evaluations/general-set/{team.pk}/", follow=True)
    version = general_version(team=team)
    assert version is not None and version.counts["eval"] == 313
    assert "general-capability v1 (313 questions) is in team Acme" in r.content.decode()
    # Once added, the page links the version instead of offering the button again.
    page = browser_client.get("/evaluations/").content.decode()
    assert "Add the general-capability set to Acme" not in page
    assert f"/datasets/{version.dataset_id}/v/{version.number}/" in page
    browser_client.post(f"/evaluations/general-set/{team.pk}/")
    assert DatasetVersion.objects.filter(dataset__team=team).count() == 1


def test_the_button_is_not_for_outsiders_or_anonymous_visitors(team, outsider):
    client = Client()
    client.force_login(outsider)
    page = client.get("/evaluations/").content.decode()
    assert "to Acme" not in page and "Add the general-capability set to Other" in page
    assert client.post(f"/evaluations/general-set/{team.pk}/").status_code == 404
    anonymous = Client().post(f"/evaluations/general-set/{team.pk}/")
    assert anonymous.status_code == 302 and "/login" in anonymous["Location"]
    assert not Dataset.objects.filter(team=team).exists()
