"""Resource exhaustion through lists that grow without bound: a page or an API answer that
renders a model's whole alias history (or every dataset, experiment, evaluation...) costs
more with each row until it times out. Every such list comes a page at a time."""

import re

import pytest

from datasets_app.models import Dataset
from experiments import services as training
from registry import services
from registry.models import AliasEvent, ModelVersion
from tests.support.training_helpers import make_experiment

EVENTS = 60
HISTORY = "/api/registry/models/triage/aliases/production/history"


@pytest.fixture
def history(team, owner, tiny_model):
    """A model whose production alias moved EVENTS times (rows made directly: the pages
    are under test here, not promotion)."""
    model = services.model_create(team=team, name="triage", by=owner)
    run = training.run_enqueue(
        experiment=make_experiment(team, owner, tiny_model), by=owner, dispatch=False
    )
    version = ModelVersion.objects.create(
        registered_model=model,
        number=1,
        source_run=run,
        dataset_version=run.experiment.dataset_version,
        base_model="embedded",
        kind="adapter",
        artifact_path=f"runs/{run.pk}/final",
        created_by=owner,
    )
    AliasEvent.objects.bulk_create(
        AliasEvent(
            registered_model=model,
            alias="production",
            sequence=i,
            action="promote",
            to_version=version,
            actor=owner,
            reason=f"reason-{i:03d}",
        )
        for i in range(1, EVENTS + 1)
    )
    return model


def _reasons(html: str) -> list[str]:
    return re.findall(r"reason-\d{3}", html)


def test_model_page_shows_the_history_a_page_at_a_time(browser_client, history):
    first = browser_client.get("/registry/triage/").content.decode()
    assert _reasons(first) == [f"reason-{i:03d}" for i in range(EVENTS, EVENTS - 25, -1)]
    assert 'href="?history=2"' in first and "Page 1 of 3" in first
    last = browser_client.get("/registry/triage/?history=3").content.decode()
    assert _reasons(last) == [f"reason-{i:03d}" for i in range(10, 0, -1)]
    # other lists of the page keep their own page number in the links
    other = browser_client.get("/registry/triage/?history=2&versions=1").content.decode()
    assert "?history=3&amp;versions=1" in other and "?history=1&amp;versions=1" in other


@pytest.mark.parametrize("page", ["abc", "0", "-1", "999999"])
def test_a_malformed_page_number_is_not_an_error(browser_client, history, page):
    r = browser_client.get(f"/registry/triage/?history={page}")
    assert r.status_code == 200 and len(_reasons(r.content.decode())) in (25, 10)


def test_history_api_takes_page_and_limit(api, history):
    r = api.get(HISTORY, page=2, limit=20)
    assert r.status_code == 200 and r["X-Total-Count"] == str(EVENTS)
    assert [e["sequence"] for e in r.json()] == list(range(21, 41))
    assert len(api.get(HISTORY).json()) == EVENTS  # the default page holds up to 100
    for bad in ({"limit": 0}, {"limit": 501}, {"page": 0}, {"page": "x"}):
        assert api.get(HISTORY, **bad).status_code == 422, bad


def test_registry_lists_refuse_outsiders(outsider_api, history):
    assert outsider_api.get(HISTORY, page=1).status_code == 404
    assert outsider_api.get("/api/registry/models/triage/promotions", page=1).status_code == 404
    assert outsider_api.get("/api/registry/models").json() == []
    assert "triage" not in outsider_api.get("/api/registry/models").content.decode()


def test_registry_api_lists_are_paged(api, history, team, owner):
    for i in range(4):
        services.model_create(team=team, name=f"m{i}", by=owner)
    r = api.get("/api/registry/models", limit=2, page=3)
    assert r["X-Total-Count"] == "5" and [m["name"] for m in r.json()] == ["triage"]
    r = api.get("/api/registry/models/triage/promotions", limit=5)
    assert r.status_code == 200 and r["X-Total-Count"] == "0" and r.json() == []


@pytest.fixture
def datasets(team, owner):
    Dataset.objects.bulk_create(
        Dataset(team=team, name=f"set-{i:02d}", task="instruction", created_by=owner)
        for i in range(30)
    )


def test_dataset_list_and_team_page_are_paged(browser_client, team, datasets):
    for url in ["/datasets/", f"/teams/{team.pk}/"]:
        first = browser_client.get(url).content.decode()
        assert len(re.findall(r">set-\d\d<", first)) == 25 and "Page 1 of 2" in first, url
        second = browser_client.get(url + "?page=2").content.decode()
        assert re.findall(r">set-\d\d<", second) == [f">set-{i}<" for i in range(25, 30)]


def test_dataset_lists_refuse_outsiders(browser_client, team, outsider, datasets):
    browser_client.force_login(outsider)
    assert "set-0" not in browser_client.get("/datasets/?page=2").content.decode()
    assert browser_client.get(f"/teams/{team.pk}/?page=2").status_code == 404


def test_experiment_and_run_lists_are_paged(
    api, outsider_api, browser_client, team, owner, tiny_model
):
    experiment = make_experiment(team, owner, tiny_model)
    for _ in range(3):
        training.run_enqueue(experiment=experiment, by=owner, dispatch=False)
    r = api.get("/api/runs/queue", limit=2)
    assert r["X-Total-Count"] == "3" and len(r.json()) == 2
    r = api.get("/api/experiments", limit=1, page=1)
    assert r["X-Total-Count"] == "1" and r.json()[0]["id"] == experiment.pk
    assert outsider_api.get("/api/runs/queue").json() == []
    assert outsider_api.get("/api/experiments").json() == []
    for url in ["/experiments/", f"/experiments/{experiment.pk}/", "/runs/", "/evaluations/"]:
        assert browser_client.get(url).status_code == 200, url


def test_evaluation_list_api_is_paged(api, outsider_api):
    r = api.get("/api/evaluations", limit=10)
    assert r.status_code == 200 and r["X-Total-Count"] == "0"
    assert outsider_api.get("/api/evaluations", page=2).json() == []
