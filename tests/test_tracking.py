"""Experiment tracking at scale (experiments/metric_store.py): series thinned when written keep
every bucket's first, last, lowest and highest point and equal a one-shot thinning however the
points arrive; comparisons of any number of runs page in a constant number of queries; the run
table filters and sorts by any hyperparameter or latest metric, a page at a time."""

import json
import random

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from experiments import metric_store
from experiments.models import MetricPoint, MetricSeries, TrainingRun
from tests.support.training_helpers import make_experiment, many_runs

pytestmark = pytest.mark.django_db


def random_walk(n: int, seed: int, start: int = 0, every: int = 1) -> list[tuple[int, float]]:
    rng = random.Random(seed)
    value, points = 0.0, []
    for i in range(n):
        value += rng.gauss(0, 1)
        points.append((start + i * every, round(value, 6)))
    return points


def buckets(points, width):
    out = {}
    for step, value in points:
        out.setdefault(step // width, []).append((step, value))
    return out


@pytest.mark.parametrize("n,limit,every", [(10, 1000, 1), (5000, 1000, 1), (3000, 100, 5)])
def test_thinning_keeps_each_buckets_first_last_lowest_and_highest(n, limit, every):
    raw = random_walk(n, seed=n, every=every)
    thinned, width = metric_store.thin(raw, limit)
    assert len(thinned) <= limit
    assert thinned == sorted(thinned) and set(thinned) <= set(raw)
    assert thinned[0] == raw[0] and thinned[-1] == raw[-1]
    kept = set(thinned)
    for bucket in buckets(raw, width).values():
        assert bucket[0] in kept and bucket[-1] in kept
        assert min(v for _, v in bucket) in {
            v for s, v in kept if s // width == bucket[0][0] // width
        }
        assert max(v for _, v in bucket) in {
            v for s, v in kept if s // width == bucket[0][0] // width
        }
    if n <= limit:
        assert (thinned, width) == (raw, 1)
    else:  # the narrowest width that fits: half of it would not
        half = [
            p for b in buckets(raw, width // 2).values() for p in metric_store._bucket_points(b)
        ]
        assert len(half) > limit


def test_a_series_written_in_batches_equals_one_thinning_of_all_its_points(team, owner, tiny_model):
    run = TrainingRun.objects.create(
        experiment=make_experiment(team, owner, tiny_model), created_by=owner
    )
    raw = random_walk(4321, seed=7)
    shuffled_batches = [raw[i : i + 97] for i in range(0, len(raw), 97)]
    random.Random(1).shuffle(shuffled_batches)  # batches out of order, as HTTP clients send
    for batch in shuffled_batches:
        assert metric_store.points_ingest((run.pk, s, "loss", v) for s, v in batch) == len(batch)
    series = MetricSeries.objects.get(run=run, key="loss")
    expected, width = metric_store.thin(raw, metric_store.SERIES_POINTS)
    stored = json.loads(series.points)
    assert list(zip(stored["steps"], stored["values"], strict=True)) == expected
    assert series.width == width and series.count == len(raw)
    assert (series.last_step, series.last_value) == raw[-1]
    assert series.min_value == min(v for _, v in raw) and series.max_value == max(v for _, v in raw)
    assert MetricPoint.objects.filter(run=run, key="loss").count() == len(raw)


def test_history_reads_the_series_or_the_raw_points_alike(api, team, owner, tiny_model):
    run = TrainingRun.objects.create(
        experiment=make_experiment(team, owner, tiny_model), created_by=owner
    )
    raw = random_walk(3000, seed=3)
    metric_store.points_ingest((run.pk, s, "loss", v) for s, v in raw)
    for max_points in (500, 1000, 5000):
        got = api.get(f"/api/runs/{run.pk}/metrics", keys="loss", max_points=max_points).json()
        expected, _ = metric_store.thin(raw, max_points)
        assert got["metrics"]["loss"] == {
            "steps": [s for s, _ in expected],
            "values": [v for _, v in expected],
        }


def test_a_resumed_attempt_rebuilds_the_series_without_the_dropped_steps(team, owner, tiny_model):
    from experiments.training.reporting import RunReporter

    run = TrainingRun.objects.create(
        experiment=make_experiment(team, owner, tiny_model), created_by=owner
    )
    metric_store.points_ingest((run.pk, s, "loss", 10.0 - s) for s in range(1, 9))

    class State:
        global_step, max_steps = 5, 8

    RunReporter(run, log_path=metric_store.__file__).on_train_begin(None, State(), None)
    series = MetricSeries.objects.get(run=run, key="loss")
    assert json.loads(series.points)["steps"] == [1, 2, 3, 4, 5]
    assert (series.last_step, series.last_value, series.count) == (5, 5.0, 5)


def test_a_comparison_of_any_size_pages_in_constant_queries(api, team, owner, tiny_model):
    runs = many_runs(team, owner, tiny_model, 45)
    ids = [r.pk for r in reversed(runs)]  # the caller's order is kept

    def page(count: int, number: int, limit: int):
        with CaptureQueriesContext(connection) as queries:
            response = api.get(
                "/api/runs/compare",
                ids=",".join(map(str, ids[:count])),
                keys="loss,eval_loss",
                page=number,
                limit=limit,
            )
        return response, len(queries)

    page(1, 1, 100)  # the first request of a token also records its use
    small, small_queries = page(5, 1, 100)
    large, large_queries = page(45, 2, 20)
    assert small_queries == large_queries
    assert large.status_code == 200 and large["X-Total-Count"] == "45"
    assert [c["run"]["id"] for c in large.json()] == ids[20:40]
    assert all(len(c["metrics"]["loss"]["steps"]) == 50 for c in large.json())
    last = api.get("/api/runs/compare", ids=",".join(map(str, ids)), page=3, limit=20).json()
    assert [c["run"]["id"] for c in last] == ids[40:]
    # The ids in a body, for lists too long for a URL.
    posted = api.post("/api/runs/compare", {"ids": ids, "keys": ["loss"], "limit": 500})
    assert [c["run"]["id"] for c in posted.json()] == ids


def test_the_points_of_a_comparison_page_are_shared_between_its_curves(
    api, team, owner, tiny_model, monkeypatch
):
    from experiments import selectors

    monkeypatch.setattr(selectors, "COMPARE_POINTS", 2000)
    runs = many_runs(team, owner, tiny_model, 10, steps=400)
    response = api.get(
        "/api/runs/compare", ids=",".join(str(r.pk) for r in runs), keys="loss,eval_loss"
    )
    assert response["X-Points-Per-Curve"] == "100"  # 2,000 points over 20 curves
    for compared in response.json():
        assert 2 <= len(compared["metrics"]["loss"]["steps"]) <= 100
        assert compared["metrics"]["loss"]["steps"][-1] == 399


def test_one_run_of_another_team_fails_the_whole_comparison(
    api, outsider_api, team, owner, tiny_model
):
    runs = many_runs(team, owner, tiny_model, 3)
    ids = ",".join(str(r.pk) for r in runs)
    assert outsider_api.get("/api/runs/compare", ids=ids).status_code == 404
    assert outsider_api.post("/api/runs/compare", {"ids": [runs[0].pk]}).status_code == 404
    missing = api.get("/api/runs/compare", ids=f"{ids},{runs[-1].pk + 1000}")
    assert missing.status_code == 404 and str(runs[-1].pk + 1000) in missing.json()["detail"]
    assert api.get("/api/runs/compare", ids=ids, max_points=1001).status_code == 422
    assert api.post("/api/runs/compare", {"ids": []}).status_code == 422


def test_the_run_table_filters_and_sorts_by_metrics_and_params(
    api, outsider_api, team, owner, tiny_model
):
    low = make_experiment(team, owner, tiny_model, lora_r=4)
    high = make_experiment(team, owner, tiny_model, lora_r=32)
    runs = TrainingRun.objects.bulk_create(
        TrainingRun(experiment=experiment, created_by=owner)
        for experiment in (low, high, low, high, low)
    )
    losses = [3.0, 1.0, 2.0, 5.0]  # the last run logs nothing
    metric_store.points_ingest(
        (run.pk, 1, "loss", loss) for run, loss in zip(runs, losses, strict=False)
    )

    def ids(**query):
        response = api.get("/api/runs", **query)
        assert response.status_code == 200, response.json()
        return [row["id"] for row in response.json()]

    by_loss = ids(sort="metrics.loss")
    assert by_loss == [runs[1].pk, runs[2].pk, runs[0].pk, runs[3].pk, runs[4].pk]  # none last
    assert ids(sort="-metrics.loss")[:4] == [runs[3].pk, runs[0].pk, runs[2].pk, runs[1].pk]
    assert ids(filter="metrics.loss < 3") == [runs[2].pk, runs[1].pk]  # newest first
    assert ids(filter="params.lora_r = 32 and metrics.loss >= 2") == [runs[3].pk]
    assert ids(filter="params.lora_r > 4", sort="id") == [runs[1].pk, runs[3].pk]
    assert ids(filter="params.technique = 'lora' and params.lora_r != 32", sort="id") == [
        runs[0].pk,
        runs[2].pk,
        runs[4].pk,
    ]
    row = api.get("/api/runs", filter="metrics.loss = 1").json()[0]
    assert row["metrics"] == {"loss": 1.0, "eval_loss": None} and row["params"]["lora_r"] == 32
    paged = api.get("/api/runs", sort="id", page=2, limit=2)
    assert paged["X-Total-Count"] == "5" and [r["id"] for r in paged.json()] == [
        runs[2].pk,
        runs[3].pk,
    ]
    assert outsider_api.get("/api/runs").json() == []
    # A name is a literal key, never a lookup: lora_r__gt is no "lora_r greater than".
    assert ids(filter="params.lora_r__gt = 2") == []
    assert ids(filter="params.lora_r__gt != 2") == []
    for bad, field in [
        ({"filter": "metrics.loss ~ 2"}, "filter"),
        ({"filter": "metrics.loss < 'low'"}, "filter"),
        ({"sort": "experiment__team"}, "sort"),
        ({"status": "dancing"}, "status"),
    ]:
        response = api.get("/api/runs", **bad)
        assert response.status_code == 422, bad
        assert response.json()["errors"][0]["field"] == field


def test_a_run_table_page_takes_the_same_queries_for_10_or_60_runs(api, team, owner, tiny_model):
    many_runs(team, owner, tiny_model, 10, steps=3)

    def count():
        with CaptureQueriesContext(connection) as queries:
            assert (
                api.get("/api/runs", sort="-metrics.loss", filter="metrics.loss > 0").status_code
                == 200
            )
        return len(queries)

    count()  # the first request of a token also records its use
    before = count()
    many_runs(team, owner, tiny_model, 50, steps=3)
    assert count() == before


def test_the_migration_gives_runs_logged_before_it_their_series(team, owner, tiny_model):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("experiments.migrations.0004_metric_series")
    run = TrainingRun.objects.create(
        experiment=make_experiment(team, owner, tiny_model), created_by=owner
    )
    raw = random_walk(2500, seed=11)
    MetricPoint.objects.bulk_create(
        MetricPoint(run=run, step=s, key="loss", value=v) for s, v in raw
    )
    migration.series_from_points(apps, None)
    migrated = MetricSeries.objects.get(run=run, key="loss")
    MetricSeries.objects.all().delete()
    MetricPoint.objects.all().delete()
    metric_store.points_ingest((run.pk, s, "loss", v) for s, v in raw)
    ingested = MetricSeries.objects.get(run=run, key="loss")
    fields = metric_store.SERIES_FIELDS
    assert [getattr(migrated, f) for f in fields] == [getattr(ingested, f) for f in fields]


@pytest.mark.parametrize("seed", range(20))
def test_the_one_pass_thinning_equals_bucket_by_bucket(seed):
    """Ties (equal values, repeated steps) included: the hot path keeps the same points as
    taking each bucket's first, last, lowest and highest one by one."""
    import itertools

    rng = random.Random(seed)
    points = sorted(
        (rng.randrange(300), float(rng.randrange(5))) for _ in range(rng.randrange(1, 400))
    )
    for width in (1, 2, 7, 64, 1024):
        expected = [
            p
            for _, bucket in itertools.groupby(points, key=lambda p: p[0] // width)
            for p in metric_store._bucket_points(list(bucket))
        ]
        assert metric_store._emit(points, width) == expected


def test_the_last_point_logged_at_a_step_is_the_last_value(team, owner, tiny_model):
    """Two points at one step (an eval and a re-log, say): the later one logged is the
    series' last value, whatever their values."""
    run = TrainingRun.objects.create(
        experiment=make_experiment(team, owner, tiny_model), created_by=owner
    )
    metric_store.points_ingest(
        [(run.pk, 1, "loss", 1.0), (run.pk, 2, "loss", 9.0), (run.pk, 2, "loss", 3.0)]
    )
    series = MetricSeries.objects.get(run=run, key="loss")
    assert (series.last_step, series.last_value) == (2, 3.0)
    assert json.loads(series.points) == {"steps": [1, 2, 2], "values": [1.0, 9.0, 3.0]}
