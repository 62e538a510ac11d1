"""Denial of service between tenants: one team (or one looping script) queueing runs and
evaluations without limit starves every other team of the shared workers. Each team has a
limit on queued work, enforced for every way work gets queued, and under concurrency."""

import time

import pytest

from evaluation.models import Comparison, EvaluationRun
from experiments import services as training
from experiments.models import TrainingRun
from finetune_hub import quotas
from finetune_hub.errors import ServiceError
from tests.support.concurrency import errors, race
from tests.support.training_helpers import make_experiment, make_version


@pytest.fixture
def experiment(team, owner, tiny_model, settings):
    settings.TEAM_MAX_QUEUED_RUNS = 2
    return make_experiment(team, owner, tiny_model)


def _queue(experiment, owner):
    return training.run_enqueue(experiment=experiment, by=owner, dispatch=False)


def test_defaults_come_from_settings(settings):
    from finetune_hub import settings as project

    assert project.TEAM_MAX_QUEUED_RUNS == 20 and project.TEAM_MAX_QUEUED_EVALUATIONS == 50


def test_queued_runs_past_the_limit_are_refused_with_429(api, experiment, owner):
    url = f"/api/experiments/{experiment.pk}/runs"
    assert api.post(url).status_code == 201 and api.post(url).status_code == 201
    r = api.post(url)
    assert r.status_code == 429 and "TEAM_MAX_QUEUED_RUNS=2" in r.json()["detail"]
    assert TrainingRun.objects.filter(status="queued").count() == 2


def test_the_dashboard_shows_the_limit(browser_client, experiment, owner):
    _queue(experiment, owner), _queue(experiment, owner)
    r = browser_client.post(f"/experiments/{experiment.pk}/runs/", follow=True)
    assert "TEAM_MAX_QUEUED_RUNS=2" in r.content.decode()
    assert TrainingRun.objects.count() == 2


def test_finished_runs_free_their_slot_and_resume_counts(experiment, owner):
    first, _ = _queue(experiment, owner), _queue(experiment, owner)
    training.run_cancel(run=first, by=owner)
    third = _queue(experiment, owner)
    with pytest.raises(ServiceError) as refused:
        training.run_resume(run=first, by=owner)  # a resumed run is queued work too
    assert refused.value.status == 429
    training.run_cancel(run=third, by=owner)
    assert training.run_resume(run=first, by=owner).status == "queued"


def test_another_teams_queue_does_not_count(experiment, owner, outsider, tiny_model):
    other = make_experiment(outsider.teams.get(), outsider, tiny_model)
    _queue(other, outsider), _queue(other, outsider)
    _queue(experiment, owner), _queue(experiment, owner)
    with pytest.raises(ServiceError):
        _queue(other, outsider)


def test_outsider_cannot_queue_on_my_team(outsider_api, experiment):
    assert outsider_api.post(f"/api/experiments/{experiment.pk}/runs").status_code == 404
    assert TrainingRun.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_the_check_needs_the_queueing_transaction(team):
    with pytest.raises(RuntimeError):
        quotas.queue_room_require(team=team, kind="runs", queued=TrainingRun.objects.none())


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_requests_cannot_both_take_the_last_slot(
    team, owner, tiny_model, settings, monkeypatch
):
    """The count is slowed down so that, without the lock, both requests would count the
    same free slot before either inserts its run. Bites on PostgreSQL
    (tests/support/concurrency.py)."""
    settings.TEAM_MAX_QUEUED_RUNS = 1
    experiment = make_experiment(team, owner, tiny_model)
    setting, count, what = quotas.LIMITS["runs"]

    def slow_count(t):
        n = count(t)
        time.sleep(0.5)
        return n

    monkeypatch.setitem(quotas.LIMITS, "runs", (setting, slow_count, what))
    outcomes = race(lambda: _queue(experiment, owner), [(), ()])
    refused = [o for o in outcomes if isinstance(o, ServiceError)]
    assert [e.status for e in refused] == [429] and len(errors(outcomes)) == 1, outcomes
    assert TrainingRun.objects.filter(status="queued").count() == 1


# --- evaluations ---------------------------------------------------------------------------


@pytest.fixture
def version(team, owner, settings):
    settings.TEAM_MAX_QUEUED_EVALUATIONS = 1
    return make_version(team, owner, n=40)


def test_queued_evaluations_past_the_limit_are_refused(api, browser_client, version, tiny_model):
    body = {"subject": {"base_model": tiny_model}, "dataset_version": version.pk}
    assert api.post("/api/evaluations", body).status_code == 201
    r = api.post("/api/evaluations", body)
    assert r.status_code == 429 and "TEAM_MAX_QUEUED_EVALUATIONS=1" in r.json()["detail"]
    r = browser_client.post(
        "/evaluations/new/",
        {"subject": f"base:{tiny_model}", "dataset_version": version.pk},
        follow=True,
    )
    assert "TEAM_MAX_QUEUED_EVALUATIONS=1" in r.content.decode()
    assert EvaluationRun.objects.count() == 1


def test_comparisons_count_the_evaluations_they_queue(api, outsider_api, version, tiny_model):
    body = {
        "subjects": [{"base_model": tiny_model}, {"base_model": "embedded"}],
        "dataset_version": version.pk,
    }
    r = api.post("/api/comparisons", body)
    assert r.status_code == 429 and "TEAM_MAX_QUEUED_EVALUATIONS" in r.json()["detail"]
    assert Comparison.objects.count() == 0 and EvaluationRun.objects.count() == 0
    assert outsider_api.post("/api/comparisons", body).status_code in (400, 404)


def test_scheduled_retraining_waits_when_the_queue_is_full(team, owner, tiny_model, settings):
    from django.utils import timezone

    from datasets_app.services import dataset_version_upload
    from registry import services
    from registry.models import RetrainJob
    from registry.retraining import retrain_due
    from tests.support.data import examples, jsonl
    from tests.support.registry_helpers import trained_run

    run = trained_run(team, owner, tiny_model, seed=1)
    model = services.model_create(team=team, name="triage", by=owner)
    version = services.version_register(model=model, run=run, by=owner)
    services.alias_promote(model=model, alias="production", version=version, by=owner, reason="v1")
    services.schedule_set(model=model, every_days=7, by=owner)
    dataset_version_upload(  # newer data to retrain on
        dataset=run.experiment.dataset_version.dataset,
        filename="v2.jsonl",
        by=owner,
        data=jsonl(examples("instruction", 130)).encode(),
    )
    settings.TEAM_MAX_QUEUED_RUNS = 0
    assert retrain_due(now=timezone.now()) == []
    assert not RetrainJob.objects.exists()
    assert not TrainingRun.objects.filter(status="queued").exists()
    model.refresh_from_db()
    assert model.last_retrain_at is None  # tried again next time
