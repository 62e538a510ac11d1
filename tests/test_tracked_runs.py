"""Runs trained anywhere (experiments/tracked.py): the native tracked-run API, its rules
(team scoping, all-or-none batches, parameters written once, artifacts as safetensors only,
written once, bounded), and tracked runs beside queued ones in tables, comparisons, the
registry and evaluations. The Python client, the TrainerCallback and the MLflow-compatible
API against a live server: tests/test_tracked_live.py."""

import json
import math
from datetime import timedelta

import pytest
import torch
from django.utils import timezone

from experiments import services
from experiments.models import Experiment, MetricPoint, TrainingRun
from experiments.training import queue
from finetune_hub.storage import artifact_path
from tests.support.tracked import start, weights
from tests.support.training_helpers import make_experiment, make_version


def put(api, run_id, name, data: bytes):
    return api.client.put(
        f"/api/runs/{run_id}/artifacts/{name}",
        data,
        content_type="application/octet-stream",
        **api._headers(),
    )


def test_a_tracked_run_starts_in_a_project_made_once(api, team):
    first = start(api, team, name="a", params={"lr": 0.001, "optim": "adamw"}, tags={"k": "v"})
    second = start(api, team, name="b")
    assert first["status"] == "running" and first["source"] == "tracked"
    assert first["name"] == "a" and first["tags"] == {"k": "v"}
    assert first["experiment"] == second["experiment"]
    project = Experiment.objects.get(pk=first["experiment"])
    assert project.tracked and project.dataset_version is None and project.name == "outside"
    detail = api.get(f"/api/experiments/{project.pk}").json()
    assert detail["tracked"] is True and detail["dataset_version"] is None
    assert {r["id"] for r in detail["runs"]} == {first["id"], second["id"]}


def test_a_tracked_run_can_join_a_queued_experiment(api, team, owner, tiny_model):
    experiment = make_experiment(team, owner, tiny_model)
    r = api.post("/api/runs", {"team": team.pk, "experiment": experiment.pk})
    assert r.status_code == 201 and r.json()["base_model_name"] == experiment.base_model
    both = api.post("/api/runs", {"team": team.pk, "experiment": experiment.pk, "project": "x"})
    assert both.status_code == 422 and both.json()["errors"][0]["field"] == "project"


def test_outsiders_reach_no_tracked_run(api, outsider_api, anon_api, team):
    run = start(api, team)
    assert outsider_api.post("/api/runs", {"team": team.pk, "project": "p"}).status_code == 404
    point = {"points": [{"step": 1, "key": "loss", "value": 1.0}]}
    assert outsider_api.post(f"/api/runs/{run['id']}/metrics", point).status_code == 404
    assert outsider_api.post(f"/api/runs/{run['id']}/end", {}).status_code == 404
    assert outsider_api.post(f"/api/runs/{run['id']}/params", {"params": {}}).status_code == 404
    assert put(outsider_api, run["id"], "a.safetensors", weights()).status_code == 404
    assert anon_api.post(f"/api/runs/{run['id']}/metrics", point).status_code == 401
    assert anon_api.post("/api/runs", {"team": team.pk, "project": "p"}).status_code == 401
    assert put(anon_api, run["id"], "a.safetensors", weights()).status_code == 401
    assert MetricPoint.objects.count() == 0


def test_points_land_in_the_curves_and_move_the_run(api, team):
    run = start(api, team)
    points = [
        {"step": s, "key": "loss", "value": 2.0 - s / 100, "timestamp": 1_700_000_000_000 + s}
        for s in range(1, 301)
    ]
    points += [{"step": s, "key": "system/peak_rss_gib", "value": 1.5} for s in (100, 300)]
    r = api.post(f"/api/runs/{run['id']}/metrics", {"points": points})
    assert r.status_code == 200 and r.json()["written"] == 302
    detail = api.get(f"/api/runs/{run['id']}").json()
    assert detail["step"] == 300
    curves = api.get(f"/api/runs/{run['id']}/metrics", keys="loss,system/peak_rss_gib").json()
    assert (
        curves["metrics"]["loss"]["steps"][0] == 1 and curves["metrics"]["loss"]["steps"][-1] == 300
    )
    assert curves["metrics"]["system/peak_rss_gib"]["values"] == [1.5, 1.5]
    stamps = set(MetricPoint.objects.filter(key="loss").values_list("timestamp", flat=True))
    assert min(stamps) == 1_700_000_000_001


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"step": 1, "key": "loss", "value": math.nan}, "points[1].value"),
        ({"step": 1, "key": "loss", "value": math.inf}, "points[1].value"),
        # steps are MLflow's int64, negative too
        ({"step": 2**63, "key": "loss", "value": 1.0}, "points.1.step"),  # the schema's
        ({"step": -(2**63) - 1, "key": "loss", "value": 1.0}, "points.1.step"),
        ({"step": 1, "key": "", "value": 1.0}, "points[1].key"),
        ({"step": 1, "key": "x" * 251, "value": 1.0}, "points[1].key"),
        ({"step": 1, "key": "bad\nkey", "value": 1.0}, "points[1].key"),
        ({"step": 1, "key": "loss", "value": 1.0, "timestamp": -5}, "points[1].timestamp"),
    ],
)
def test_a_bad_point_names_itself_and_nothing_of_its_batch_is_written(api, team, bad, field):
    run = start(api, team)
    body = json.dumps({"points": [{"step": 0, "key": "loss", "value": 1.0}, bad]})
    r = api.client.post(
        f"/api/runs/{run['id']}/metrics", body, content_type="application/json", **api._headers()
    )
    assert r.status_code == 422, r.content
    assert field in {e.get("field") for e in r.json()["errors"]} | {
        r.json()["detail"][: len(field)]
    }
    assert MetricPoint.objects.count() == 0


def test_a_batch_is_bounded(api, team):
    run = start(api, team)
    points = [{"step": i, "key": "loss", "value": 1.0} for i in range(10_001)]
    r = api.post(f"/api/runs/{run['id']}/metrics", {"points": points})
    assert r.status_code == 422 and MetricPoint.objects.count() == 0


def test_parameters_are_written_once_and_sort_as_numbers(api, team):
    runs = [start(api, team, params={"lr": lr, "name": f"r{lr}"}) for lr in (0.01, 0.001, 0.1)]
    first = runs[0]["id"]
    assert api.post(f"/api/runs/{first}/params", {"params": {"lr": 0.01}}).status_code == 200
    changed = api.post(f"/api/runs/{first}/params", {"params": {"lr": 0.02}})
    assert changed.status_code == 409 and changed.json()["errors"][0]["field"] == "params.lr"
    more = api.post(f"/api/runs/{first}/params", {"params": {"batch": "16"}}).json()
    assert TrainingRun.objects.get(pk=more["id"]).params["batch"] == 16  # numeric text: a number
    table = api.get("/api/runs", sort="params.lr").json()
    assert [r["params"]["lr"] for r in table] == [0.001, 0.01, 0.1]
    small = api.get("/api/runs", filter="params.lr < 0.05").json()
    assert {r["id"] for r in small} == {runs[0]["id"], runs[1]["id"]}
    bad = api.post(f"/api/runs/{first}/params", {"params": {"bad\nname": 1}})
    assert bad.status_code == 422 and "params." in bad.json()["errors"][0]["field"]


def test_ending_is_idempotent_and_final(api, team):
    run = start(api, team)
    url = f"/api/runs/{run['id']}"
    assert api.post(f"{url}/end", {"status": "succeeded"}).json()["status"] == "succeeded"
    again = api.post(f"{url}/end", {"status": "succeeded"})
    assert again.status_code == 200 and again.json()["finished_at"]
    assert api.post(f"{url}/end", {"status": "failed"}).status_code == 409
    late = api.post(f"{url}/metrics", {"points": [{"step": 1, "key": "loss", "value": 1.0}]})
    assert late.status_code == 409
    assert api.post(f"{url}/end", {"status": "exploded"}).status_code in (409, 422)
    assert start(api, team)["status"] == "running"
    bad = api.post(f"/api/runs/{start(api, team)['id']}/end", {"status": "exploded"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "status"


def test_a_queued_run_takes_no_tracked_writes_and_a_tracked_one_no_queue_actions(
    api, team, owner, tiny_model
):
    queued = services.run_enqueue(
        experiment=make_experiment(team, owner, tiny_model), by=owner, dispatch=False
    )
    point = {"points": [{"step": 1, "key": "loss", "value": 1.0}]}
    assert api.post(f"/api/runs/{queued.pk}/metrics", point).status_code == 409
    assert api.post(f"/api/runs/{queued.pk}/end", {}).status_code == 409
    assert put(api, queued.pk, "a.safetensors", weights()).status_code == 409
    run = start(api, team)
    assert api.post(f"/api/runs/{run['id']}/cancel").status_code == 409
    api.post(f"/api/runs/{run['id']}/end", {"status": "failed"})
    assert api.post(f"/api/runs/{run['id']}/resume").status_code == 409


def test_the_stale_run_reaper_leaves_tracked_runs_alone(api, team):
    run = start(api, team)
    TrainingRun.objects.filter(pk=run["id"]).update(heartbeat_at=timezone.now() - timedelta(days=1))
    assert queue.runs_reap_stale(stale_after=timedelta(minutes=5)) == []
    assert TrainingRun.objects.get(pk=run["id"]).status == "running"


@pytest.mark.parametrize(
    "name, data, status",
    [
        ("pytorch_model.bin", b"pickle", 422),
        ("optimizer.pt", b"pickle", 422),
        ("model.pkl", b"pickle", 422),
        ("evil.py", b"import os", 422),
        (".hidden.safetensors", weights(), 422),
        ("broken.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{not json", 422),
        ("config.json", b"{not json", 422),
        ("empty.json", b"", 422),
    ],
)
def test_an_artifact_that_is_not_safe_is_refused_and_leaves_nothing(api, team, name, data, status):
    run = start(api, team)
    r = put(api, run["id"], name, data)
    assert r.status_code == status, r.content
    assert "/" not in r.json()["detail"].replace("/s", "")  # no server path in the error
    assert TrainingRun.objects.get(pk=run["id"]).output_files == {}
    folder = artifact_path(f"runs/{run['id']}/output")
    assert not folder.exists() or list(folder.iterdir()) == []


def test_an_artifact_path_cannot_leave_the_run_folder(api, team):
    run = start(api, team)
    for name in ("..%2F..%2Fx.safetensors", "%2E%2E", "a%2Fb.safetensors"):
        r = put(api, run["id"], name, weights())
        assert r.status_code in (404, 422), (name, r.status_code)
    assert TrainingRun.objects.get(pk=run["id"]).output_files == {}


def test_an_artifact_is_written_once_and_bounded(api, team, settings):
    run = start(api, team)
    r = put(api, run["id"], "adapter_model.safetensors", weights())
    assert r.status_code == 201 and len(r.json()["sha256"]) == 64
    assert put(api, run["id"], "adapter_model.safetensors", weights()).status_code == 409
    settings.ARTIFACT_MAX_UPLOAD_BYTES = 100
    big = put(api, run["id"], "big.safetensors", weights() + b" " * 200)
    assert big.status_code == 413
    files = {p.name for p in artifact_path(f"runs/{run['id']}/output").iterdir()}
    assert files == {"adapter_model.safetensors"}


def _adapter_files(tiny_model, folder):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    return sorted(folder.iterdir())


def test_a_tracked_run_with_weights_is_registrable_and_evaluable(
    api, team, owner, tiny_model, tmp_path
):
    run = start(api, team, base_model=tiny_model)
    for path in _adapter_files(tiny_model, tmp_path / "adapter"):
        assert put(api, run["id"], path.name, path.read_bytes()).status_code == 201, path
    assert api.post(f"/api/runs/{run['id']}/end", {"status": "succeeded"}).status_code == 200
    api.post("/api/registry/models", {"team": team.pk, "name": "outside-model"})
    r = api.post("/api/registry/models/outside-model/versions", {"run": run["id"]})
    assert r.status_code == 201, r.content
    version = api.get("/api/registry/models/outside-model/versions/1").json()
    assert version["kind"] == "adapter" and version["base_model"] == tiny_model
    assert version["dataset_version"] is None
    assert version["lineage"]["run"]["source"] == "tracked"
    assert version["lineage"]["dataset_versions"] == []
    data = make_version(team, owner)
    evaluation = api.post(
        "/api/evaluations",
        {"subject": {"run": run["id"]}, "dataset_version": data.pk, "metrics": ["exact_match"]},
    )
    assert evaluation.status_code == 201, evaluation.content


def test_a_tracked_run_without_a_base_model_is_not_registrable(api, team):
    run = start(api, team)
    assert put(api, run["id"], "model.safetensors", weights()).status_code == 201
    api.post(f"/api/runs/{run['id']}/end", {"status": "succeeded"})
    api.post("/api/registry/models", {"team": team.pk, "name": "m"})
    r = api.post("/api/registry/models/m/versions", {"run": run["id"]})
    assert r.status_code == 409 and "base model" in r.json()["detail"]


def test_an_unknown_base_model_is_refused_at_start(api, team):
    r = api.post("/api/runs", {"team": team.pk, "project": "p", "base_model": "/etc"})
    assert r.status_code in (400, 422) and r.json()["errors"][0]["field"] == "base_model"


def test_tracked_runs_sit_beside_queued_ones(api, team, owner, tiny_model):
    queued = services.run_enqueue(
        experiment=make_experiment(team, owner, tiny_model), by=owner, dispatch=False
    )
    tracked = start(api, team, params={"lora_r": 8})
    api.post(
        f"/api/runs/{tracked['id']}/metrics",
        {"points": [{"step": s, "key": "loss", "value": 3.0 - s} for s in range(3)]},
    )
    table = api.get("/api/runs").json()
    assert {r["id"] for r in table} == {queued.pk, tracked["id"]}
    row = next(r for r in table if r["id"] == tracked["id"])
    assert row["metrics"]["loss"] == 1.0 and row["params"]["lora_r"] == 8
    compared = api.get("/api/runs/compare", ids=f"{queued.pk},{tracked['id']}", keys="loss").json()
    assert compared[1]["metrics"]["loss"]["values"] == [3.0, 2.0, 1.0]
    page = api.client.get("/runs/table/")  # bearer is not a session: the page redirects
    assert page.status_code == 302


def test_the_dashboard_shows_a_tracked_run(api, team, browser_client):
    run = start(api, team, name="from-axolotl", params={"lr": 0.5}, tags={"host": "gpu-7"})
    page = browser_client.get(f"/runs/{run['id']}/").content.decode()
    assert "from-axolotl" in page and 'id="tracked"' in page and "gpu-7" in page
    assert 'id="cancel"' not in page
    project = browser_client.get(f"/experiments/{run['experiment']}/").content.decode()
    assert "tracked project" in project and "Queue a run" not in project
    table = browser_client.get("/runs/table/").content.decode()
    assert "from-axolotl" in table and "tracked" in table


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_batches_of_one_run_all_land(team, owner):
    """Two processes of one run (ranks, or a retry beside a slow first try) send the first
    points of the same new series at once: the run's row lock orders them, so neither meets
    the series' unique constraint (this bites on PostgreSQL, where the two overlap)."""
    from experiments import tracked
    from tests.support.concurrency import errors, race

    run = tracked.run_start(experiment=tracked.project_for(team=team, name="p", by=owner), by=owner)

    def send(offset):
        points = [(offset + s, "loss", 1.0, None) for s in range(5000)]
        return tracked.points_log(run=run, points=points, by=owner)

    outcomes = race(send, [(0,), (10_000,), (20_000,)])
    assert errors(outcomes) == [] and outcomes == [5000, 5000, 5000]
    series = run.series.get(key="loss")
    assert series.count == 15_000 and series.last_step == 24_999
    assert MetricPoint.objects.filter(run=run).count() == 15_000


def test_any_run_takes_tags_and_notes_and_the_table_searches_and_filters_them(
    api, outsider_api, team, owner, tiny_model, browser_client
):
    queued = services.run_enqueue(
        experiment=make_experiment(team, owner, tiny_model), by=owner, dispatch=False
    )
    other = start(api, team, name="baseline-7")
    tagged = api.post(
        f"/api/runs/{queued.pk}/tags", {"tags": {"stage": "candidate", "gpu": "a100"}}
    )
    assert tagged.status_code == 200 and tagged.json()["tags"] == {
        "stage": "candidate",
        "gpu": "a100",
    }
    replaced = api.post(
        f"/api/runs/{queued.pk}/tags", {"tags": {"stage": "final"}, "replace": True}
    )
    assert replaced.json()["tags"] == {"stage": "final"}
    noted = api.post(f"/api/runs/{queued.pk}/notes", {"notes": "lr too high after step 400"})
    assert noted.status_code == 200 and noted.json()["notes"] == "lr too high after step 400"
    assert outsider_api.post(f"/api/runs/{queued.pk}/notes", {"notes": "x"}).status_code == 404
    assert outsider_api.post(f"/api/runs/{queued.pk}/tags", {"tags": {}}).status_code == 404
    long = api.post(f"/api/runs/{queued.pk}/notes", {"notes": "x" * 10_001})
    assert long.status_code == 422 and long.json()["errors"][0]["field"] == "notes"

    def ids(**query):
        return [r["id"] for r in api.get("/api/runs", **query).json()]

    assert ids(q="TOO HIGH") == [queued.pk]  # notes, any case
    assert ids(q="baseline") == [other["id"]]  # a run's name
    assert ids(q="final") == [queued.pk]  # a tag's value
    assert ids(filter="tags.stage = final") == [queued.pk]
    assert ids(filter="tags.stage != final") == []  # a run without the tag matches no clause
    # The run page saves tags and notes from its form (one name=value a line).
    r = browser_client.post(
        f"/runs/{other['id']}/annotate/", {"tags": "team=nlp\nrerun", "notes": "seed 2"}
    )
    assert r.status_code == 302
    run = TrainingRun.objects.get(pk=other["id"])
    assert run.tags == {"team": "nlp", "rerun": ""} and run.notes == "seed 2"
    bad = browser_client.post(
        f"/runs/{other['id']}/annotate/", {"tags": "=x", "notes": "n"}, follow=True
    )
    assert "tags line 1" in bad.content.decode()
    assert TrainingRun.objects.get(pk=other["id"]).notes == "seed 2"  # nothing half-saved
    table = browser_client.get("/runs/table/", {"q": "nlp"}).content.decode()
    assert f"#{other['id']}" in table and f"#{queued.pk}<" not in table


def test_the_run_table_filters_on_dataset_and_dates(api, team, owner, tiny_model):
    from datetime import timedelta

    queued = services.run_enqueue(
        experiment=make_experiment(team, owner, tiny_model), by=owner, dispatch=False
    )
    other = start(api, team)
    TrainingRun.objects.filter(pk=other["id"]).update(queued_at=timezone.now() - timedelta(days=10))
    dataset = queued.experiment.dataset_version.dataset.name

    def ids(filter):
        r = api.get("/api/runs", filter=filter)
        assert r.status_code == 200, r.content
        return [row["id"] for row in r.json()]

    assert ids(f"params.dataset = {dataset}") == [queued.pk]
    since = (timezone.now() - timedelta(days=2)).date().isoformat()
    assert ids(f"queued_at >= {since}") == [queued.pk]
    assert ids(f"queued_at < {since}") == [other["id"]]
    bad = api.get("/api/runs", filter="queued_at >= yesterday")
    assert bad.status_code == 422 and "is not a date" in bad.json()["detail"]
