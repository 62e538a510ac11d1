"""Metric points in and curves out, at team scale.

In: `points_ingest` writes a batch of (run, step, key, value) points as plain tuples, COPY on
PostgreSQL and one multi-row `executemany` on SQLite, with no model object per point; in the
same transaction it folds the batch into each touched MetricSeries. The training process and
the HTTP batch endpoint both come through here.

Out: a chart never needs more points than it has pixels. Each series is thinned when written
(`thin`): the steps are cut into buckets of `width` steps and each bucket keeps its first,
last, lowest and highest point; the width doubles until at most SERIES_POINTS points remain.
Re-thinning thinned points at a doubled width gives what thinning the raw points would, so a
series is updated from its stored points and a new batch alone, and read at any smaller
budget the same way. Comparisons and run tables read MetricSeries rows, one per run and key,
never the raw points.
"""

import itertools
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence

from django.db import connection, transaction

from experiments.models import MetricPoint, MetricSeries

SERIES_POINTS = 1000  # stored per series, and the most a request may ask for
# What a batch changes in a MetricSeries row.
SERIES_FIELDS = (
    "count",
    "size",
    "width",
    "points",
    "last_step",
    "last_value",
    "min_value",
    "max_value",
)
Point = tuple[int, float]  # (step, value)


def _bucket_points(bucket: list[Point]) -> list[Point]:
    """A bucket's first, last, lowest and highest point (the first of equal ones), in order."""
    low = min(range(len(bucket)), key=lambda i: bucket[i][1])
    high = max(range(len(bucket)), key=lambda i: bucket[i][1])
    return [bucket[i] for i in sorted({0, len(bucket) - 1, low, high})]


def _emit(points: list[Point], width: int) -> list[Point]:
    """_bucket_points of every bucket of `width` steps, in one pass (the ingestion hot path)."""
    out: list[Point] = []
    if not points:
        return out
    bucket, start = points[0][0] // width, 0
    low = high = 0
    for i in range(1, len(points)):
        step, value = points[i]
        if step // width != bucket:
            out.extend(points[j] for j in sorted({start, i - 1, low, high}))
            bucket, start, low, high = step // width, i, i, i
        elif value < points[low][1]:
            low = i
        elif value > points[high][1]:
            high = i
    out.extend(points[j] for j in sorted({start, len(points) - 1, low, high}))
    return out


def thin(points: Sequence[Point], limit: int, width: int = 1) -> tuple[list[Point], int]:
    """Points sorted by step -> at most `limit` of them (limit >= 2) and the bucket width
    used: every bucket of `width` steps keeps its first, last, lowest and highest point."""
    points = list(points)
    if width == 1 and len(points) <= limit:
        return points, 1
    while True:
        out = _emit(points, width)
        if len(out) <= limit:
            return out, width
        width *= 2


def _dump(points: list[Point]) -> str:
    return json.dumps(
        {"steps": [s for s, _ in points], "values": [v for _, v in points]},
        separators=(",", ":"),
    )


def _load(text: str) -> list[Point]:
    data = json.loads(text)
    return list(zip(data["steps"], data["values"], strict=True))


# ---------------------------------------------------------------------- in


def _insert_raw(rows: list[tuple[int, int, str, float, int, int | None]]) -> None:
    table = MetricPoint._meta.db_table
    columns = "run_id, step, key, value, attempt, timestamp"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            cursor.executemany(
                f"INSERT INTO {table} ({columns}) VALUES (%s, %s, %s, %s, %s, %s)", rows
            )


def _fold(series, new: list[Point]) -> None:
    """Adds raw points (any step order) to a series' thinned points and figures. Points of
    the same step keep the order they were logged in: the last one logged is the last value.
    A NaN point (value None) counts and can be the last value (MLflow returns it), but stays
    out of the curve and its lowest and highest."""
    new.sort(key=lambda p: p[0])
    finite = [p for p in new if p[1] is not None]
    if finite:
        merged = sorted(_load(series.points) + finite, key=lambda p: p[0])
        points, series.width = thin(merged, SERIES_POINTS, series.width)
        series.points, series.size = _dump(points), len(points)
    series.count += len(new)
    last = new[-1]
    if series.last_step is None or last[0] >= series.last_step:
        series.last_step, series.last_value = last
    values = [v for _, v in finite]
    low = [series.min_value] if series.min_value is not None else []
    high = [series.max_value] if series.max_value is not None else []
    series.min_value = min(values + low, default=None)
    series.max_value = max(values + high, default=None)


@transaction.atomic
def points_ingest(points: Iterable[tuple], attempt: int = 1) -> int:
    """Writes (run_id, step, key, value[, timestamp ms]) points, finite values or None for
    NaN (the caller checks), and updates their runs' series. Returns how many points were
    written."""
    rows = [(p[0], p[1], p[2], p[3], attempt, p[4] if len(p) > 4 else None) for p in points]
    if not rows:
        return 0
    _insert_raw(rows)
    grouped: dict[tuple[int, str], list[Point]] = defaultdict(list)
    for run, step, key, value, _, _ in rows:
        grouped[(run, key)].append((step, value))
    runs = {run for run, _ in grouped}
    existing = {
        (s.run_id, s.key): s
        for s in MetricSeries.objects.select_for_update().filter(
            run_id__in=runs, key__in={key for _, key in grouped}
        )
    }
    created, updated = [], []
    for (run, key), new in grouped.items():
        series = existing.get((run, key))
        if series is None:
            series = MetricSeries(run_id=run, key=key)
            created.append(series)
        else:
            updated.append(series)
        _fold(series, new)
    MetricSeries.objects.bulk_create(created)
    _update_series(updated)
    return len(rows)


def _update_series(updated: list) -> None:
    """One parameterised UPDATE per series, sent together: bulk_update's CASE expressions
    cost more to build than the writes take."""
    if not updated:
        return
    table = MetricSeries._meta.db_table
    columns = ", ".join(f"{name} = %s" for name in SERIES_FIELDS)
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET {columns} WHERE id = %s",
            [[getattr(s, name) for name in SERIES_FIELDS] + [s.pk] for s in updated],
        )


@transaction.atomic
def series_rebuild(run_id: int) -> None:
    """Recomputes a run's series from its raw points (after points were deleted: a resumed
    attempt drops the steps it will train again)."""
    MetricSeries.objects.filter(run_id=run_id).delete()
    rows = MetricPoint.objects.filter(run_id=run_id).order_by("key", "step", "pk")
    created = []
    for key, points in itertools.groupby(rows.values_list("key", "step", "value"), lambda r: r[0]):
        series = MetricSeries(run_id=run_id, key=key)
        _fold(series, [(step, value) for _, step, value in points])
        created.append(series)
    MetricSeries.objects.bulk_create(created)


# ---------------------------------------------------------------------- out


def series_json(
    run_ids: Sequence[int], keys: Sequence[str], max_points: int
) -> dict[int, dict[str, str]]:
    """{run: {key: '{"steps":[...],"values":[...]}'}} for every run and key that has points,
    at most max_points points each, in one query. A stored series that fits is sent as it is
    stored, never parsed: a 500-run comparison is mostly these strings."""
    out: dict[int, dict[str, str]] = {run: {} for run in run_ids}
    rows = MetricSeries.objects.filter(run_id__in=run_ids, key__in=keys).values_list(
        "run_id", "key", "width", "size", "points"
    )
    for run, key, width, size, text in rows:
        if size > max_points:
            points, _ = thin(_load(text), max_points, width)
            text = _dump(points)
        if size:
            out[run][key] = text
    # The caller's key order, whatever order the database returned.
    return {run: {k: series[k] for k in keys if k in series} for run, series in out.items()}


def series_of(
    run_ids: Sequence[int], keys: Sequence[str], max_points: int
) -> dict[int, dict[str, dict]]:
    """series_json, parsed."""
    return {
        run: {key: json.loads(text) for key, text in series.items()}
        for run, series in series_json(run_ids, keys, max_points).items()
    }
