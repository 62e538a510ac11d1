"""The forgetting check on the pages: the comparison page's card (the general drop beside the
task gain, missing evaluations named with a button each, the offer to add the general set) and
the model version page."""

import pytest
from django.template.defaultfilters import floatformat

from evaluation.subjects import Subject
from tests.support.forgetting import (
    GENERAL_METRIC,
    N,
    always,
    answers,
    base,
    chrf,
    compare,
    evaluated,
    every_other,
    expected,
    expected_general,
    of_run,
    of_version,
    task_comparison,
    version_base,
)


@pytest.fixture
def run(runs):
    """The first of the two trained runs the registered versions come from."""
    return runs[0]


def test_the_comparison_page_shows_the_general_drop_beside_the_task_gain(
    browser_client, team, owner, general, run
):
    mine = evaluated(team, owner, general, of_run(run), every_other)
    theirs = evaluated(team, owner, general, base(run), always)
    comparison = task_comparison(team, owner, run)
    r = browser_client.get(f"/comparisons/{comparison.pk}/")
    [card] = r.context["forgetting"]
    assert (card["subject"], card["base"]) == (of_run(run), base(run))
    row = card["general"]
    assert (row["subject_evaluation"], row["base_evaluation"]) == (mine, theirs)
    assert row["metric"] == GENERAL_METRIC
    assert row["subject_score"] == pytest.approx(chrf(general, answers(every_other)))
    assert row["base_score"] == pytest.approx(100.0)
    test = expected_general(general, answers(always), answers(every_other))
    assert {k: row["test"][k] for k in test} == test
    assert row["test"]["samples"] == N and row["drop"] is True
    examples = run.experiment.dataset_version.examples.filter(split="eval").order_by("pk")
    task = card["task"]
    assert task["metric"] == "exact_match" and task["drop"] is False
    gain = expected(lambda p: p % 3 == 0, always, [e.position for e in examples])
    assert {k: task["test"][k] for k in gain} == gain and gain["difference"] > 0
    page = r.content.decode()
    assert f"Forgetting check: run #{run.pk} against base model {run.model_base}" in page
    for shown in (test, gain):
        assert f"<b>{floatformat(shown['difference'], 4)}</b>" in page
        assert f"{floatformat(shown['ci_low'], 4)} – {floatformat(shown['ci_high'], 4)}" in page
    assert "significant drop" in page and "Task gain" in page


def test_a_comparison_of_base_models_only_has_no_card(browser_client, team, owner, general):
    comparison = compare(
        team,
        owner,
        evaluated(team, owner, general, Subject(kind="base_model", base_model="a"), always),
        evaluated(team, owner, general, Subject(kind="base_model", base_model="b"), always),
    )
    r = browser_client.get(f"/comparisons/{comparison.pk}/")
    assert r.context["forgetting"] == [] and "Forgetting check" not in r.content.decode()


def test_missing_general_evaluations_are_named_with_a_button_to_queue_each(
    browser_client, team, owner, general, run
):
    comparison = task_comparison(team, owner, run)
    page = browser_client.get(f"/comparisons/{comparison.pk}/").content.decode()
    assert (
        f"Evaluate run #{run.pk} and base model {run.model_base} on this data to compare." in page
    )
    assert f'name="subject" value="run:{run.pk}"' in page
    assert f'name="subject" value="base:{run.model_base}"' in page
    assert f'name="dataset_version" value="{general.pk}"' in page
    # The button queues the metric the card's general row reads, not a name of its own.
    assert page.count(f'name="metrics" value="{GENERAL_METRIC}"') == 2
    assert f"Queue run #{run.pk} on the general set" in page


def test_without_the_general_set_the_card_offers_to_add_it(browser_client, team, owner, run):
    comparison = task_comparison(team, owner, run)
    page = browser_client.get(f"/comparisons/{comparison.pk}/").content.decode()
    assert "The general-capability set is not in team Acme yet." in page
    assert "Add the general-capability set to Acme" in page


def test_the_version_page_shows_the_check(browser_client, team, owner, general, versions):
    version = versions[1]
    evaluated(team, owner, general, of_version(version), lambda p: p % 5 != 0)
    evaluated(team, owner, general, version_base(version), lambda p: p % 5 != 1)
    r = browser_client.get(f"/registry/triage/v/{version.number}/")
    [card] = r.context["forgetting"]
    test = expected_general(general, answers(lambda p: p % 5 != 1), answers(lambda p: p % 5 != 0))
    assert {k: card["general"]["test"][k] for k in test} == test
    assert card["general"]["drop"] is False  # the same score, other questions missed
    assert card["task"]["missing"] == [of_version(version), version_base(version)]
    page = r.content.decode()
    assert f"Forgetting check: model version {version.pk} against base model" in page
    assert "no significant change" in page
