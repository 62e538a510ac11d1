"""Metric history across runs, as MLflow's UI reads it (/ajax-api/2.0/mlflow/metrics/...):
get-history-bulk (every point of one metric of up to 100 runs) and get-history-bulk-interval
(the points at a sample of the steps, MLflow's sampling: at most max_results steps of the
range, each run's first and last step kept). Runs another team owns, or that do not exist,
are left out, as MLflow's store leaves out runs it cannot read. Points come from MetricPoint
(every point, NaN included), never from the thinned curves."""

import bisect
import re

from django.db.models import Max, Min

from experiments.mlflow.messages import Message
from experiments.mlflow.protocol import MlflowError, ms, value_out
from experiments.models import MetricPoint, TrainingRun
from finetune_hub.bounds import Int64, Text, as_int
from finetune_hub.models import Team

MAX_RUNS = 100
MAX_BULK_POINTS = 25_000
MAX_INTERVAL_STEPS = 2_500


class GetMetricHistoryBulk(Message):
    run_id: list[Text(64)] = []
    metric_key: Text(250) | None = None
    max_results: Int64 | None = None


class GetMetricHistoryBulkInterval(Message):
    run_ids: list[Text(64)] = []
    metric_key: Text(250)
    start_step: Int64 | None = None
    end_step: Int64 | None = None
    max_results: Int64 | None = None


def _team_runs(team: Team, ids: list[str]) -> dict[int, TrainingRun]:
    """The team's runs among the ids (MLflow's are strings: anything else names none)."""
    pks = {as_int(i) for i in ids if re.fullmatch(r"[1-9][0-9]{0,17}", i)}
    runs = TrainingRun.objects.filter(experiment__team=team, pk__in=pks)
    return {run.pk: run for run in runs.only("pk", "started_at", "queued_at")}


def _point(key: str, run: TrainingRun, step, value, timestamp) -> dict:
    stamp = timestamp if timestamp is not None else ms(run.started_at or run.queued_at)
    return {
        "key": key,
        "value": value_out(value),
        "timestamp": stamp,
        "step": step,
        "run_id": str(run.pk),
    }


def bulk(team: Team, message: GetMetricHistoryBulk) -> dict:
    if not message.run_id:
        raise MlflowError(400, "GetMetricHistoryBulk request must specify at least one run_id.")
    if len(message.run_id) > MAX_RUNS:
        raise MlflowError(
            400,
            f"GetMetricHistoryBulk request cannot specify more than {MAX_RUNS} run_ids. "
            f"Received {len(message.run_id)} run_ids.",
        )
    if message.metric_key is None:
        raise MlflowError(400, "GetMetricHistoryBulk request must specify a metric_key.")
    limit = max(0, min(message.max_results or MAX_BULK_POINTS, MAX_BULK_POINTS))
    runs = _team_runs(team, message.run_id)
    out = []
    for run in sorted(runs.values(), key=lambda r: str(r.pk)):  # MLflow's ids sort as text
        if len(out) >= limit:
            break
        rows = (
            MetricPoint.objects.filter(run=run, key=message.metric_key)
            .order_by("timestamp", "step", "value", "pk")  # MLflow's order within a run
            .values_list("step", "value", "timestamp")
        )
        out.extend(_point(message.metric_key, run, *row) for row in rows[: limit - len(out)])
    return {"metrics": out}


def _checked_interval(message: GetMetricHistoryBulkInterval) -> int:
    if not message.run_ids:
        raise MlflowError(400, "Missing value for required parameter 'run_ids'.")
    if len(message.run_ids) > MAX_RUNS:
        raise MlflowError(
            400,
            f"GetMetricHistoryBulkInterval request must specify at most {MAX_RUNS} run_ids. "
            f"Received {len(message.run_ids)} run_ids.",
        )
    limit = MAX_INTERVAL_STEPS if message.max_results is None else message.max_results
    if not 1 <= limit <= MAX_INTERVAL_STEPS:
        raise MlflowError(400, f"max_results must be between 1 and {MAX_INTERVAL_STEPS}.")
    start, end = message.start_step, message.end_step
    if (start is None) != (end is None):
        raise MlflowError(
            400, "If either start step or end step are specified, both must be specified."
        )
    if start is not None and start > end:
        raise MlflowError(
            400,
            "end_step must be greater than start_step. "
            f"Found start_step={start} and end_step={end}.",
        )
    return limit


def _sampled_steps(points, start: int, end: int, limit: int) -> set[int]:
    """MLflow's sample: the distinct steps of [start, end], at most `limit` evenly spread
    (the last one kept), and every run's first and last step in the range."""
    all_steps = sorted(points.values_list("step", flat=True).distinct())
    edges = set()
    for low, high in (
        points.values("run_id")
        .annotate(low=Min("step"), high=Max("step"))
        .values_list("low", "high")
    ):
        edges |= {step for step in (low, high) if start <= step <= end}
    first, last = bisect.bisect_left(all_steps, start), bisect.bisect_right(all_steps, end)
    if last - first <= limit:
        return set(all_steps[first:last]) | edges
    span = last - first  # every span/limit-th step: MLflow's int(i * span / limit)
    sampled = {all_steps[first + i * span // limit] for i in range(limit)}
    return sampled | {all_steps[last - 1]} | edges


def bulk_interval(team: Team, message: GetMetricHistoryBulkInterval) -> dict:
    limit = _checked_interval(message)
    runs = _team_runs(team, message.run_ids)
    key = message.metric_key
    points = MetricPoint.objects.filter(run_id__in=list(runs), key=key)
    if not runs or not points.exists():
        return {"metrics": []}
    start, end = message.start_step, message.end_step
    if start is None:
        start, end = 0, points.aggregate(top=Max("step"))["top"]
    steps = _sampled_steps(points, start, end, limit)
    out = []
    for run_id in message.run_ids:  # in the request's order, as MLflow answers
        run = runs.get(as_int(run_id)) if re.fullmatch(r"[1-9][0-9]{0,17}", run_id) else None
        if run is None:
            continue
        rows = (
            points.filter(run=run, step__in=steps)
            .order_by("step", "timestamp", "value", "pk")
            .values_list("step", "value", "timestamp")[:MAX_BULK_POINTS]
        )
        out.extend(_point(key, run, *row) for row in rows)
    return {"metrics": out}
