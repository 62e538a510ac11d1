from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from huey.contrib.djhuey import HUEY

from experiments import services
from experiments.models import Experiment, TrainingRun, Worker
from experiments.training import queue
from tests.support.concurrency import errors, race
from tests.support.training_helpers import FAST, make_experiment, make_version


@pytest.fixture
def version(team, owner):
    return make_version(team, owner)


def payload(version, tiny_model, **overrides):
    body = {
        "team": version.dataset.team_id,
        "name": "exp",
        "dataset_version": version.pk,
        "base_model": tiny_model,
        "technique": "lora",
        "hyperparameters": dict(FAST),
    }
    return {**body, **overrides}


def test_create_fills_defaults_and_estimates(api, version, tiny_model):
    r = api.post("/api/experiments", payload(version, tiny_model, hyperparameters={}))
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["hyperparameters"]["learning_rate"] == 2e-4
    assert body["hyperparameters"]["num_train_epochs"] == 3
    assert body["estimate"]["cuda"]["trainable_params"] > 0
    full = api.post(
        "/api/experiments",
        payload(version, tiny_model, name="full", technique="full", hyperparameters={}),
    )
    assert full.json()["hyperparameters"]["learning_rate"] == 2e-5
    by_ref = api.post(
        "/api/experiments",
        payload(
            version,
            tiny_model,
            name="ref",
            dataset_version={"dataset": version.dataset_id, "number": 1},
        ),
    )
    assert by_ref.status_code == 201


@pytest.mark.parametrize(
    "params, field",
    [
        ({"learning_rate": 5}, "hyperparameters.learning_rate"),
        ({"learning_rate": -1e-4}, "hyperparameters.learning_rate"),
        ({"lora_r": 0}, "hyperparameters.lora_r"),
        ({"max_length": 4096}, "hyperparameters.max_length"),
        ({"per_device_train_batch_size": 0}, "hyperparameters.per_device_train_batch_size"),
        ({"lora_target_modules": ["attention"]}, "hyperparameters"),
        ({"learning_rat": 1e-4}, "hyperparameters.learning_rat"),
    ],
)
def test_invalid_hyperparameters_name_the_field(api, version, tiny_model, params, field):
    r = api.post("/api/experiments", payload(version, tiny_model, hyperparameters=params))
    assert r.status_code == 422, r.content
    assert r.json()["errors"][0]["field"] == field
    assert not Experiment.objects.exists()


def test_max_length_error_gives_the_models_context(api, version, tiny_model):
    r = api.post(
        "/api/experiments", payload(version, tiny_model, hyperparameters={"max_length": 4096})
    )
    assert "over the model's context of 1024" in r.json()["errors"][0]["message"]


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"technique": "sorcery"}, "technique"),
        ({"technique": "dpo"}, "dataset_version"),
        ({"base_model": "/etc"}, "base_model"),
        ({"dataset_version": 99999}, "dataset_version"),
    ],
)
def test_bad_experiment_fields(api, version, tiny_model, changes, field):
    r = api.post("/api/experiments", payload(version, tiny_model, **changes))
    assert r.status_code == 400, r.content
    assert r.json()["errors"][0]["field"] == field


def test_qlora_is_refused_when_only_cpu_workers_are_live(api, version, tiny_model, cpu_worker):
    exp = api.post("/api/experiments", payload(version, tiny_model, technique="qlora")).json()
    r = api.post(f"/api/experiments/{exp['id']}/runs", {})
    assert r.status_code == 409
    detail = r.json()["detail"]
    assert "needs a CUDA GPU" in detail and "GB" in detail
    assert not TrainingRun.objects.exists()


def test_run_bigger_than_any_worker_is_refused_with_the_estimate(
    api, version, tiny_model, cpu_worker
):
    Worker.objects.update(memory_bytes=10_000_000)
    exp = api.post("/api/experiments", payload(version, tiny_model)).json()
    r = api.post(f"/api/experiments/{exp['id']}/runs", {})
    assert r.status_code == 409 and "needs about" in r.json()["detail"]
    assert "has 0.0 GB" in r.json()["detail"]


def test_a_run_no_live_worker_can_take_fails_with_the_reason(team, owner, tiny_model, cpu_worker):
    from experiments.training.runner import train_next_run

    experiment = make_experiment(team, owner, tiny_model)
    run = services.run_enqueue(experiment=experiment, by=owner)
    estimate = {**experiment.estimate["cpu"], "total_bytes": 10**15, "total_gb": 1e6}
    Experiment.objects.filter(pk=experiment.pk).update(estimate={"cpu": estimate, "cuda": estimate})
    assert train_next_run(run_id=run.pk) is None
    run.refresh_from_db()
    assert run.status == "failed" and run.error == (
        "No live worker can take the run: it needs about 1000000.0 GB; the worker has "
        f"{cpu_worker.memory_bytes / 1e9:.1f} GB"
    )


@pytest.mark.django_db(transaction=True)
def test_enqueue_happens_on_commit(team, owner, tiny_model, cpu_worker):
    HUEY.flush()
    experiment = make_experiment(team, owner, tiny_model)
    with pytest.raises(RuntimeError), transaction.atomic():
        services.run_enqueue(experiment=experiment, by=owner)
        assert HUEY.pending_count() == 0
        raise RuntimeError("the request fails after queueing")
    assert HUEY.pending_count() == 0 and not TrainingRun.objects.exists()
    with transaction.atomic():
        services.run_enqueue(experiment=experiment, by=owner)
        assert HUEY.pending_count() == 0
    assert HUEY.pending_count() == 1
    HUEY.flush()


@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_for_one_run_one_wins(team, owner, tiny_model):
    """Bites on PostgreSQL (tests/support/concurrency.py): the conditional UPDATE lets one
    claim win."""
    experiment = make_experiment(team, owner, tiny_model)
    run = services.run_enqueue(experiment=experiment, by=owner, dispatch=False)
    now = timezone.now()
    workers = [
        Worker.objects.create(name=f"w{i}", host="h", pid=i, memory_bytes=10**12, heartbeat_at=now)
        for i in range(2)
    ]
    results = race(lambda worker: queue.run_claim(worker=worker), [(w,) for w in workers])
    assert not errors(results), results
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and winners[0].pk == run.pk
    run.refresh_from_db()
    assert run.status == "running" and run.attempt == 1 and run.worker == winners[0].worker


def test_priority_decides_which_run_a_worker_takes(api, team, owner, tiny_model, cpu_worker):
    experiment = make_experiment(team, owner, tiny_model)
    first = services.run_enqueue(experiment=experiment, by=owner, dispatch=False)
    second = services.run_enqueue(experiment=experiment, by=owner, dispatch=False)
    r = api.post(f"/api/runs/{second.pk}/priority", {"priority": 5})
    assert r.status_code == 200 and r.json()["priority"] == 5
    listed = [q["id"] for q in api.get("/api/runs/queue").json()]
    assert listed == [second.pk, first.pk]
    assert queue.run_claim(worker=cpu_worker).pk == second.pk
    assert api.post(f"/api/runs/{second.pk}/priority", {"priority": 1}).status_code == 409


def test_cancel_a_queued_run_and_resume_it(api, team, owner, tiny_model, cpu_worker):
    experiment = make_experiment(team, owner, tiny_model)
    run = services.run_enqueue(experiment=experiment, by=owner, dispatch=False)
    r = api.post(f"/api/runs/{run.pk}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert api.post(f"/api/runs/{run.pk}/cancel").status_code == 409
    r = api.post(f"/api/runs/{run.pk}/resume")
    assert r.status_code == 200 and r.json()["status"] == "queued"
    assert api.post(f"/api/runs/{run.pk}/resume").status_code == 409


def test_reaper_requeues_stale_runs_and_gives_up_after_max_attempts(
    team, owner, tiny_model, cpu_worker
):
    experiment = make_experiment(team, owner, tiny_model)
    run = services.run_enqueue(experiment=experiment, by=owner, dispatch=False)
    for attempt in (1, 2, 3):
        assert queue.run_claim(worker=cpu_worker).pk == run.pk
        TrainingRun.objects.filter(pk=run.pk).update(
            heartbeat_at=timezone.now() - timedelta(minutes=10)
        )
        assert queue.runs_reap_stale(stale_after=timedelta(minutes=2)) == [run.pk]
        run.refresh_from_db()
        assert run.attempt == attempt
    assert run.status == "failed" and "gave up after 3 attempts" in run.error
    assert queue.runs_reap_stale(stale_after=timedelta(minutes=2)) == []


def test_metrics_logs_and_compare(api, team, owner, tiny_model):
    from experiments import metric_store

    experiment = make_experiment(team, owner, tiny_model)
    runs = [services.run_enqueue(experiment=experiment, by=owner, dispatch=False) for _ in range(2)]
    metric_store.points_ingest(
        (run.pk, s, "loss", 10 - s / 100) for run in runs for s in range(500)
    )
    TrainingRun.objects.filter(pk=runs[0].pk).update(log_tail="a\nb\nc")
    m = api.get(f"/api/runs/{runs[0].pk}/metrics", keys="loss", max_points=100).json()
    loss = m["metrics"]["loss"]
    assert len(loss["steps"]) <= 100 and loss["steps"][0] == 0 and loss["steps"][-1] == 499
    assert api.get(f"/api/runs/{runs[0].pk}/logs", tail=2).json()["lines"] == ["b", "c"]
    compared = api.get(
        "/api/runs/compare", ids=f"{runs[0].pk},{runs[1].pk}", keys="loss", max_points=10
    ).json()
    assert [c["run"]["id"] for c in compared] == [r.pk for r in runs]
    # A straight line: each bucket's first point is its highest and its last its lowest.
    assert all(len(c["metrics"]["loss"]["values"]) == 8 for c in compared)
    assert all(c["metrics"]["loss"]["steps"][::7] == [0, 499] for c in compared)
    assert api.get("/api/runs/compare", ids="x").status_code == 422
    assert api.get(f"/api/runs/{runs[0].pk}/metrics", max_points=1).status_code == 422


def test_it_validates_ownership(outsider_api, api, team, owner, tiny_model, version):
    experiment = make_experiment(team, owner, tiny_model)
    run = services.run_enqueue(experiment=experiment, by=owner, dispatch=False)
    gets = [
        f"/api/experiments/{experiment.pk}",
        f"/api/runs/{run.pk}",
        f"/api/runs/{run.pk}/metrics",
        f"/api/runs/{run.pk}/logs",
        f"/api/runs/compare?ids={run.pk}",
    ]
    for path in gets:
        assert outsider_api.get(path).status_code == 404, path
    posts = [
        f"/api/experiments/{experiment.pk}/runs",
        f"/api/runs/{run.pk}/cancel",
        f"/api/runs/{run.pk}/resume",
        f"/api/runs/{run.pk}/priority",
    ]
    for path in posts:
        assert outsider_api.post(path, {"priority": 3}).status_code == 404, path
    assert outsider_api.get("/api/experiments").json() == []
    assert outsider_api.get("/api/runs/queue").json() == []
    r = outsider_api.post("/api/experiments", payload(version, tiny_model, name="steal"))
    assert r.status_code == 404
    run.refresh_from_db()
    assert run.status == "queued" and run.priority == 0
    assert TrainingRun.objects.count() == 1


def test_anonymous_gets_401(anon_api, api, team, owner, tiny_model):
    for path in ["/api/experiments", "/api/runs/queue", "/api/workers", "/api/runs/1"]:
        assert anon_api.get(path).status_code == 401


def test_a_local_base_model_is_recorded_with_its_file_hashes(model_root, tiny_model):
    import hashlib
    import shutil

    from inference.base_models import describe

    folder = model_root / "plain"
    shutil.copytree(tiny_model, folder)
    (folder / "finetune_hub.json").unlink()
    info = describe(str(folder))
    expected = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert info["files_sha256"]["model.safetensors"] == expected
    assert "config.json" in info["files_sha256"] and info["path"] == str(folder)


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/api/evaluations", {"subject": {"run": "abc"}, "dataset_version": 1}, "subject.run"),
        (
            "/api/evaluations",
            {"subject": {"run": 1, "base_model": "x"}, "dataset_version": 1},
            "subject",
        ),
        (
            "/api/evaluations",
            {"subject": {"base_model": "x"}, "dataset_version": {"dataset": 1}},
            "dataset_version",
        ),
        ("/api/comparisons", {"subjects": ["a", "b"], "dataset_version": 1}, "subjects"),
        (
            "/api/experiments",
            {"team": 1, "name": "x", "dataset_version": {"number": 1}, "technique": "lora"},
            "dataset_version",
        ),
    ],
)
def test_malformed_references_are_4xx_not_500(api, team, owner, path, body, field):
    version = make_version(team, owner)
    if body.get("dataset_version") == 1:  # a real id: only the other field is malformed
        body = {**body, "dataset_version": version.pk}
    body = {**body, "team": team.pk} if path == "/api/experiments" else body
    r = api.post(path, body)
    assert 400 <= r.status_code < 500, r.content
    errors = r.json().get("errors") or [{}]
    assert errors[0].get("field", "").startswith(field), r.json()


def test_generate_with_malformed_messages_is_422(api, team, owner):
    from registry.services import model_create

    model_create(team=team, name="m", by=owner)
    r = api.post("/api/registry/models/m/aliases/production/generate", {"messages": ["hi"]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"].startswith("messages")
