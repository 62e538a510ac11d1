"""Idempotency-Key: the same creating request sent twice (a retry after a timeout, a
double-click) creates one object and answers the first answer again; another request under
the same key is refused; a failed first request frees the key; keys are per user and last
24 hours; the dashboard's forms carry one drawn for each rendering."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from evaluation.models import Comparison, EvaluationRun
from experiments.models import TrainingRun
from finetune_hub.models import IdempotentRequest
from registry import services as registry
from registry.models import AliasEvent, ModelVersion
from tests.support.concurrency import race
from tests.support.registry_helpers import trained_run
from tests.support.training_helpers import make_experiment


@pytest.fixture
def experiment(team, owner, tiny_model):
    return make_experiment(team, owner, tiny_model)


def send(api, method: str, path: str, body: dict, key: str | None = "k-1"):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    call = getattr(api.client, method)
    return call(path, body, content_type="application/json", **api._headers(), **headers)


def queue(api, experiment, key="k-1", priority=0):
    return send(api, "post", f"/api/experiments/{experiment.pk}/runs", {"priority": priority}, key)


def test_the_same_run_request_twice_creates_one_run(api, experiment):
    first, second = queue(api, experiment), queue(api, experiment)
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json() == first.json() and second["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert TrainingRun.objects.filter(experiment=experiment).count() == 1


def test_without_a_key_each_request_creates(api, experiment):
    queue(api, experiment, key=None)
    queue(api, experiment, key=None)
    assert TrainingRun.objects.filter(experiment=experiment).count() == 2


def test_another_request_under_the_same_key_is_refused(api, experiment):
    queue(api, experiment, priority=0)
    r = queue(api, experiment, priority=5)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "Idempotency-Key"
    assert "another request" in r.json()["detail"]
    assert TrainingRun.objects.filter(experiment=experiment).count() == 1


def test_a_refused_first_request_frees_the_key(api, experiment):
    r = queue(api, experiment, priority=10**6)  # out of range: 422
    assert r.status_code == 422 and not IdempotentRequest.objects.exists()
    assert queue(api, experiment).status_code == 201


def test_keys_are_per_user(api, experiment, team, owner, member):
    from tests.support.clients import ApiClient

    queue(api, experiment)
    assert queue(ApiClient(member), experiment).status_code == 201
    assert TrainingRun.objects.filter(experiment=experiment).count() == 2


def test_an_outsider_gets_404_and_holds_no_key(outsider_api, experiment):
    assert queue(outsider_api, experiment).status_code == 404
    assert not IdempotentRequest.objects.exists()


def test_a_key_lasts_24_hours(api, experiment):
    queue(api, experiment)
    IdempotentRequest.objects.update(created_at=timezone.now() - timedelta(hours=25))
    assert queue(api, experiment).status_code == 201
    assert TrainingRun.objects.filter(experiment=experiment).count() == 2
    assert IdempotentRequest.objects.count() == 1  # the expired one went


@pytest.mark.parametrize("key", ["x" * 256, "tab\there", "é"])
def test_a_key_that_is_not_visible_ascii_up_to_255_is_refused(api, experiment, key):
    r = queue(api, experiment, key=key)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "Idempotency-Key"
    assert not TrainingRun.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_same_request_twice_at_once_creates_one_run_and_both_get_it(api, experiment):
    outcomes = race(lambda: queue(api, experiment), [(), ()])
    assert [r.status_code for r in outcomes] == [201, 201]
    assert outcomes[0].json()["id"] == outcomes[1].json()["id"]
    assert TrainingRun.objects.filter(experiment=experiment).count() == 1


@pytest.fixture
def versions(team, owner, tiny_model):
    model = registry.model_create(team=team, name="keyed", by=owner)
    run = trained_run(team, owner, tiny_model, seed=2)
    v1 = registry.version_register(model=model, run=run, by=owner)
    v2 = registry.version_register(model=model, run=run, by=owner)
    registry.alias_promote(model=model, alias="production", version=v1, by=owner, reason="1")
    return run, model, v1, v2


def test_evaluations_and_comparisons_are_created_once(api, experiment, tiny_model):
    version = experiment.dataset_version.pk
    evaluation = {"subject": {"base_model": tiny_model}, "dataset_version": version}
    for _ in range(2):
        assert send(api, "post", "/api/evaluations", evaluation, "e").status_code == 201
    comparison = {
        "subjects": [{"base_model": tiny_model}, {"run": trained_run_of(experiment)}],
        "dataset_version": version,
    }
    for _ in range(2):
        assert send(api, "post", "/api/comparisons", comparison, "c").status_code == 201
    assert Comparison.objects.count() == 1
    # the comparison's own evaluations and the one above, each made once
    assert EvaluationRun.objects.count() == 2


def trained_run_of(experiment) -> int:
    run = TrainingRun.objects.create(
        experiment=experiment,
        created_by=experiment.created_by,
        status="succeeded",
        output_path="runs/x/final",
    )
    return run.pk


def test_registration_promotion_and_rollback_happen_once(api, versions):
    run, model, v1, v2 = versions
    base = "/api/registry/models/keyed"
    for _ in range(2):
        assert send(api, "post", f"{base}/versions", {"run": run.pk}, "r").status_code == 201
    assert ModelVersion.objects.filter(registered_model=model).count() == 3
    promote = {"version": 2, "reason": "better"}
    answers = [send(api, "put", f"{base}/aliases/production", promote, "p") for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200]  # not a 409 "already points at"
    assert answers[0].json() == answers[1].json()
    rollback = {"reason": "worse"}
    answers = [
        send(api, "post", f"{base}/aliases/production/rollback", rollback, "b") for _ in "12"
    ]
    assert answers[0].json() == answers[1].json() and answers[1].json()["to_version"] == 1
    assert AliasEvent.objects.filter(registered_model=model).count() == 3  # not a toggle back


def test_a_form_submitted_twice_queues_one_run(owner, experiment):
    client = Client()
    client.force_login(owner)
    page = client.get(f"/experiments/{experiment.pk}/").content.decode()
    [key] = re.findall(r'name="idempotency_key" value="([0-9a-f]{32})"', page)
    again = client.get(f"/experiments/{experiment.pk}/").content.decode()
    assert key not in again  # a key for each rendering
    form = {"priority": "0", "idempotency_key": key}
    first = client.post(f"/experiments/{experiment.pk}/runs/", form)
    second = client.post(f"/experiments/{experiment.pk}/runs/", form)
    run = TrainingRun.objects.get(experiment=experiment)
    assert first.status_code == second.status_code == 302
    assert first["Location"] == second["Location"] == f"/runs/{run.pk}/"


@pytest.mark.parametrize(
    "page, form_action",
    [
        ("/evaluations/", "/evaluations/new/"),
        ("/evaluations/", "/comparisons/new/"),
        ("/registry/keyed/", "/registry/keyed/promote/"),
        ("/registry/keyed/", "/registry/keyed/rollback/"),
        ("/registry/keyed/", "/registry/keyed/register/"),
    ],
)
def test_every_creating_form_carries_a_key(browser_client, versions, page, form_action):
    html = browser_client.get(page).content.decode()
    forms = re.findall(rf'<form[^>]*action="{re.escape(form_action)}".*?</form>', html, re.S)
    assert forms and all('name="idempotency_key"' in form for form in forms)


def test_the_openapi_document_names_the_header_where_it_applies(api):
    paths = api.get("/api/openapi.json").json()["paths"]

    def takes_key(path, method):
        parameters = paths[path][method].get("parameters", [])
        return any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in parameters)

    assert takes_key("/api/experiments/{experiment_id}/runs", "post")
    assert takes_key("/api/evaluations", "post")
    assert takes_key("/api/registry/models/{name}/aliases/{alias}", "put")
    assert not takes_key("/api/runs/{run_id}/cancel", "post")
