"""MLflow's runs and metrics through /mlflow: the real mlflow client against a live server
(user_id, NaN and +-inf, negative and int64 steps, 250-character keys, a finished run still
taking metrics, delete and restore, delete-tag, search's tags and attributes, order_by and
ties, the metric history pages and bulk calls under /ajax-api), MLflow's error wording,
another team's runs (404), no token (401), and the dashboard's deleted run."""

import math

import pytest

from experiments import metric_store, tracked
from experiments.models import MetricSeries, TrainingRun
from finetune_hub.auth import token_create
from finetune_hub.errors import ServiceError
from tests.support.mlflow_calls import call, mlflow_client


@pytest.fixture
def token(owner):
    return token_create(user=owner, name="t")[1]


@pytest.mark.django_db(transaction=True)
def test_the_mlflow_client_logs_what_mlflow_keeps(live_server, token, owner, monkeypatch):
    from mlflow.exceptions import MlflowException

    client = mlflow_client(live_server.url, token, monkeypatch)
    eid = client.create_experiment("e")
    run = client.create_run(eid, tags={"mlflow.user": "alice"}, start_time=456)
    assert (run.info.user_id, run.info.start_time) == ("alice", 456)
    assert client.get_run(client.create_run(eid).info.run_id).info.user_id == "unknown"
    rid = run.info.run_id
    long_key = "k" * 250
    client.log_metric(rid, "nan", float("nan"))
    client.log_metric(rid, "inf", float("inf"))
    client.log_metric(rid, "-inf", -float("inf"))
    client.log_metric(rid, long_key, 1.5, step=-3, timestamp=7)
    client.log_metric(rid, long_key, 2.5, step=2**40, timestamp=8)
    metrics = client.get_run(rid).data.metrics
    assert math.isnan(metrics["nan"])
    assert metrics["inf"] >= 1.7976931348623157e308 and metrics["-inf"] <= -1.7976931348623157e308
    assert metrics[long_key] == 2.5
    history = client.get_metric_history(rid, long_key)
    assert [(m.step, m.value, m.timestamp) for m in history] == [(-3, 1.5, 7), (2**40, 2.5, 8)]
    assert math.isnan(client.get_metric_history(rid, "nan")[0].value)
    # NaN stays out of the dashboard's curve
    nan_series = MetricSeries.objects.get(run_id=rid, key="nan")
    assert (nan_series.count, nan_series.size, nan_series.last_value) == (1, 0, None)
    # a finished run still takes metrics through MLflow (not through the native API)
    client.set_terminated(rid)
    client.log_metric(rid, "after", 1.0)
    with pytest.raises(ServiceError):
        tracked.points_log(run=TrainingRun.objects.get(pk=rid), points=[(0, "x", 1.0)], by=owner)

    client.set_tag(rid, "stage", "final")
    client.delete_tag(rid, "stage")
    assert "stage" not in client.get_run(rid).data.tags
    with pytest.raises(MlflowException, match="No tag with name: fake"):
        client.delete_tag(rid, "fake")
    client.delete_run(rid)
    assert client.get_run(rid).info.lifecycle_stage == "deleted"
    with pytest.raises(MlflowException, match=f"The run {rid} must be in"):
        client.log_metric(rid, "late", 1.0)
    assert rid not in [r.info.run_id for r in client.search_runs([eid])]
    from mlflow.entities import ViewType

    deleted = client.search_runs([eid], run_view_type=ViewType.DELETED_ONLY)
    assert [r.info.run_id for r in deleted] == [rid]
    client.restore_run(rid)
    assert client.get_run(rid).info.lifecycle_stage == "active"


@pytest.mark.django_db(transaction=True)
def test_search_reads_mlflows_filters_order_and_ties(live_server, token, monkeypatch):
    client = mlflow_client(live_server.url, token, monkeypatch)
    eid = client.create_experiment("search")
    ids = [client.create_run(eid, start_time=1).info.run_id for _ in range(5)]
    page = client.search_runs([eid], max_results=2)
    assert [r.info.run_id for r in page] == sorted(ids, key=int)[:2] and page.token
    client.set_tag(ids[1], "kind", "base")
    client.set_tag(ids[3], "kind", "tuned")
    client.log_metric(ids[3], "loss", 0.5)
    client.log_metric(ids[1], "loss", 0.9)
    assert [r.info.run_id for r in client.search_runs([eid], "tags.kind = 'base'")] == [ids[1]]
    found = client.search_runs([eid], "tags.kind LIKE '%e%'", order_by=["metrics.loss ASC"])
    assert [r.info.run_id for r in found] == [ids[3], ids[1]]
    found = client.search_runs([eid], order_by=["tags.kind DESC", "attributes.run_id ASC"])
    assert [r.info.run_id for r in found][:2] == [ids[3], ids[1]]
    name = client.get_run(ids[0]).info.run_name
    found = client.search_runs([eid], f"attributes.run_name = '{name}'")
    assert [r.info.run_id for r in found] == [ids[0]]
    found = client.search_runs(
        [eid], f"tags.mlflow.runName = '{name}' AND attributes.status = 'RUNNING'"
    )
    assert [r.info.run_id for r in found] == [ids[0]]
    found = client.search_runs(
        [eid], "attributes.start_time = 1 AND attributes.user_id = 'unknown'"
    )
    assert len(found) == 5


@pytest.mark.django_db
def test_metric_history_pages_and_bulk_calls(client, token, team):
    _, made = call(client, token, "experiments/create", {"name": "h"})
    runs = [
        call(client, token, "runs/create", {"experiment_id": made["experiment_id"]})[1]["run"][
            "info"
        ]["run_id"]
        for _ in range(2)
    ]
    for rid in runs:
        metrics = [
            {"key": "m", "value": float(i), "step": i, "timestamp": 100 + i} for i in range(10)
        ]
        status, _ = call(client, token, "runs/log-batch", {"run_id": rid, "metrics": metrics})
        assert status == 200
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    for prefix in ("/mlflow/ajax-api/2.0/mlflow", f"/mlflow/teams/{team.pk}/ajax-api/2.0/mlflow"):
        r = client.get(
            f"{prefix}/metrics/get-history",
            {"run_id": runs[0], "metric_key": "m", "max_results": 4},
            **headers,
        )
        assert [p["step"] for p in r.json()["metrics"]] == [0, 1, 2, 3] and r.json()[
            "next_page_token"
        ]
        r = client.get(
            f"{prefix}/metrics/get-history-bulk",
            {"run_id": runs, "metric_key": "m", "max_results": 12},
            **headers,
        )
        assert [(p["run_id"], p["step"]) for p in r.json()["metrics"]] == [
            (runs[0], i) for i in range(10)
        ] + [(runs[1], 0), (runs[1], 1)]
        r = client.get(
            f"{prefix}/metrics/get-history-bulk-interval",
            {"run_ids": runs[:1], "metric_key": "m", "max_results": 5},
            **headers,
        )
        assert [p["step"] for p in r.json()["metrics"]] == [0, 2, 4, 6, 8, 9]
    r = client.get(
        "/mlflow/ajax-api/2.0/mlflow/metrics/get-history-bulk", {"metric_key": "m"}, **headers
    )
    assert r.status_code == 400 and "at least one run_id" in r.json()["message"]
    r = client.get(
        "/mlflow/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
        {"run_ids": runs, "metric_key": "m", "start_step": 3},
        **headers,
    )
    assert r.status_code == 400 and "both must be specified" in r.json()["message"]


BAD = [
    (
        "runs/log-metric",
        {"run_id": 31, "key": "m", "value": 1, "timestamp": 1},
        "Invalid value 31 for parameter 'run_id' supplied",
    ),
    (
        "runs/log-metric",
        {"run_id": "R", "key": "m", "value": 1, "timestamp": 1, "step": "foo"},
        "Invalid value \"foo\" for parameter 'step' supplied",
    ),
    (
        "runs/log-metric",
        {"run_id": "R", "key": None, "value": 1, "timestamp": 1},
        "Missing value for required parameter 'key'",
    ),
    (
        "runs/log-batch",
        {"run_id": "R", "metrics": "foo"},
        "Invalid value \"foo\" for parameter 'metrics' supplied",
    ),
    (
        "runs/set-tag",
        {"run_id": "R", "key": "k", "value": 41},
        "Invalid value 41 for parameter 'value' supplied",
    ),
    (
        "runs/log-parameter",
        {"run_id": "R", "key": 31, "value": "v"},
        "Invalid value 31 for parameter 'key' supplied",
    ),
    ("runs/log-metric", {"run_id": "R", "key": "k" * 251, "value": 1, "timestamp": 1}, "key"),
    (
        "runs/search",
        {"max_results": 123456789},
        "Invalid value 123456789 for parameter 'max_results' supplied",
    ),
    ("runs/search", {"filter": "attributes.colour = 'red'"}, "colour"),
    ("runs/search", {"order_by": ["nonsense.x"]}, "order_by"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("route, body, message", BAD)
def test_a_bad_run_call_is_refused_in_mlflows_words(client, token, route, body, message):
    _, made = call(client, token, "experiments/create", {"name": "v"})
    _, run = call(client, token, "runs/create", {"experiment_id": made["experiment_id"]})
    body = {k: run["run"]["info"]["run_id"] if v == "R" else v for k, v in body.items()}
    status, answer = call(client, token, route, body)
    assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE", answer
    assert message in answer["message"]


@pytest.mark.django_db
def test_another_teams_run_is_not_found_and_a_token_is_required(client, token, outsider, team):
    _, made = call(client, token, "experiments/create", {"name": "mine"})
    _, run = call(client, token, "runs/create", {"experiment_id": made["experiment_id"]})
    rid = run["run"]["info"]["run_id"]
    theirs = token_create(user=outsider, name="o")[1]
    for route in ("runs/delete", "runs/restore", "runs/delete-tag"):
        body = {"run_id": rid, "key": "k"}
        status, answer = call(client, theirs, route, body)
        assert status == 404 and answer["error_code"] == "RESOURCE_DOES_NOT_EXIST", route
        assert call(client, None, route, body)[0] == 401
    r = client.get(
        "/mlflow/ajax-api/2.0/mlflow/metrics/get-history-bulk",
        {"run_id": [rid], "metric_key": "m"},
        HTTP_AUTHORIZATION=f"Bearer {theirs}",
    )
    assert r.status_code == 200 and r.json()["metrics"] == []
    assert TrainingRun.objects.get(pk=rid).deleted_at is None


@pytest.mark.django_db
def test_the_dashboard_hides_a_deleted_run_and_restores_it(client, token, api, browser_client):
    _, made = call(client, token, "experiments/create", {"name": "d"})
    _, run = call(
        client, token, "runs/create", {"experiment_id": made["experiment_id"], "user_id": "bob"}
    )
    rid = int(run["run"]["info"]["run_id"])
    metric_store.points_ingest([(rid, 1, "loss", 1.0)])
    assert 'id="mlflow-user"' in browser_client.get(f"/runs/{rid}/").content.decode()
    call(client, token, "runs/delete", {"run_id": str(rid)})
    assert rid not in [row["id"] for row in api.get("/api/runs").json()]
    page = browser_client.get(f"/runs/{rid}/").content.decode()
    assert "deleted (MLflow)" in page and 'id="restore"' in page
    assert browser_client.post(f"/runs/{rid}/restore/").status_code == 302
    assert rid in [row["id"] for row in api.get("/api/runs").json()]


@pytest.mark.django_db
def test_nan_is_kept_for_mlflow_and_out_of_the_curves(client, token, api):
    _, made = call(client, token, "experiments/create", {"name": "n"})
    _, run = call(client, token, "runs/create", {"experiment_id": made["experiment_id"]})
    rid = run["run"]["info"]["run_id"]
    metrics = [
        {"key": "m", "value": 1.0, "step": 0, "timestamp": 1},
        {"key": "m", "value": "NaN", "step": 1, "timestamp": 2},
        {"key": "m", "value": "-Infinity", "step": 2, "timestamp": 3},
    ]
    assert call(client, token, "runs/log-batch", {"run_id": rid, "metrics": metrics})[0] == 200
    _, history = call(client, token, "metrics/get-history", get={"run_id": rid, "metric_key": "m"})
    assert [p["value"] for p in history["metrics"]] == [1.0, "NaN", -1.7976931348623157e308]
    for max_points in (100, 5000):  # the thinned series, and the raw points
        r = api.get(f"/api/runs/{rid}/metrics", keys="m", max_points=max_points)
        assert r.status_code == 200 and r.json()["metrics"]["m"]["steps"] == [0, 2], r.json()
