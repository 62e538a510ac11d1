"""Runs trained anywhere: a team's own script, Axolotl, LLaMA-Factory or any Hugging Face
Trainer reports a run here (finetune_hub.client, the FinetuneHubCallback, or the
MLflow-compatible API in experiments/mlflow/). A tracked run lives beside the queued
ones: the same table, charts, comparisons and metric storage (experiments/metric_store.py). Its
uploaded safetensors files make it evaluable and registrable like a queued run's output.

Every write names its run, which the caller's team must own (the selectors check it); every
rule lives here, so the native API and the MLflow one refuse the same things."""

import json
import math
import re
from collections.abc import Iterable

from django.db import IntegrityError, transaction
from django.utils import timezone

from experiments import metric_store
from experiments.models import Experiment, TrainingRun
from finetune_hub.bounds import INT64_MAX, INT64_MIN
from finetune_hub.errors import Conflict, FieldError, ServiceError, invalid
from finetune_hub.models import Role, Team
from finetune_hub.selectors import membership_require
from inference.base_models import load_config

# A metric's, parameter's or tag's name: up to 250 characters, as MLflow's.
# (MLflow's: "-inf_metric" too; never a leading slash or space).
KEY = PARAM_KEY = re.compile(r"^[A-Za-z0-9_.\-][A-Za-z0-9_.\-/: ]{0,249}$")
MAX_PARAMS = 1000
MAX_TAGS = 200
MAX_VALUE_CHARS = 6000  # MLflow's limit for a parameter value
MAX_BATCH_POINTS = 10_000
RUN_STEP_MAX = 2**31 - 1  # TrainingRun.step (the progress bar), whatever a point's step


def project_for(*, team: Team, name: str, by) -> Experiment:
    """The team's experiment of that name, made as a project of tracked runs when there is
    none (two first runs at once: the unique constraint decides, the loser reads it)."""
    membership_require(user=by, team=team, role=Role.MEMBER)
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise invalid("project: 1 to 100 characters", field="project", status=422)
    found = Experiment.objects.filter(team=team, name=name).first()
    if found:
        return found
    try:
        with transaction.atomic():
            return Experiment.objects.create(team=team, name=name, tracked=True, created_by=by)
    except IntegrityError:
        return Experiment.objects.get(team=team, name=name)


def _text(value, field: str, limit: int = MAX_VALUE_CHARS) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    if len(text) > limit:
        raise invalid(f"{field}: at most {limit} characters", field=field, status=422)
    return text


def _param_value(value):
    """Numbers stay numbers (the run table sorts them as numbers); a string that is exactly a
    number's text (MLflow sends every parameter as text) becomes that number."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return value
    if isinstance(value, str):
        for kind in (int, float):
            try:
                number = kind(value)
            except ValueError:
                continue
            if str(number) == value and (kind is int or math.isfinite(number)):
                return number
        return value
    return value


def _checked_map(values, field: str, key_re, limit: int, coerce) -> dict:
    if not isinstance(values, dict):
        raise invalid(f"{field}: an object of name -> value", field=field, status=422)
    if len(values) > limit:
        raise invalid(f"{field}: at most {limit} entries", field=field, status=422)
    out = {}
    for key, value in values.items():
        if not isinstance(key, str) or not key_re.match(key):
            raise invalid(
                f"{field}: {str(key)[:60]!r} is not a valid name (letters, digits, _ . - / : "
                "and spaces, at most 250 characters)",
                field=f"{field}.{str(key)[:60]}",
                status=422,
            )
        if isinstance(value, dict | list):
            value = _text(value, f"{field}.{key}")
        elif isinstance(value, str):
            _text(value, f"{field}.{key}")
        out[key] = coerce(value)
    return out


def params_checked(params) -> dict:
    return _checked_map(params or {}, "params", PARAM_KEY, MAX_PARAMS, _param_value)


def tags_checked(tags) -> dict:
    return _checked_map(tags or {}, "tags", PARAM_KEY, MAX_TAGS, lambda v: _text(v, "tags"))


def run_start(
    *,
    experiment: Experiment,
    by,
    name: str = "",
    params=None,
    tags=None,
    base_model: str = "",
    started_at=None,
    mlflow_user: str = "",
) -> TrainingRun:
    """A run that some other process trains: running from now, ended by its own process."""
    membership_require(user=by, team=experiment.team, role=Role.MEMBER)
    if len(name or "") > 200:
        raise invalid("name: at most 200 characters", field="name", status=422)
    params, tags = params_checked(params), tags_checked(tags)
    if base_model:
        load_config(base_model)  # the one resolver: allowed roots or a hub id, else 422
    now = timezone.now()
    return TrainingRun.objects.create(
        experiment=experiment,
        source=TrainingRun.Source.TRACKED,
        status=TrainingRun.Status.RUNNING,
        name=name or "",
        params=params,
        tags=tags,
        base_model=base_model or "",
        attempt=1,
        max_attempts=1,
        started_at=started_at or now,
        heartbeat_at=now,
        created_by=by,
        mlflow_user=mlflow_user[:250],
    )


def writable_require(run: TrainingRun, by) -> None:
    membership_require(user=by, team=run.experiment.team, role=Role.MEMBER)
    if run.source != TrainingRun.Source.TRACKED:
        raise Conflict(f"Run {run.pk} is trained by a worker here; only tracked runs take writes")
    active_require(run)


def active_require(run: TrainingRun) -> None:
    """A deleted run (MLflow's lifecycle) takes no writes until it is restored."""
    if run.deleted_at is not None:
        raise invalid(
            f"The run {run.pk} must be in the 'active' state. Current state is deleted.",
            field="run_id",
        )


def _running(run: TrainingRun) -> None:
    if run.status != TrainingRun.Status.RUNNING:
        raise Conflict(f"Run {run.pk} is {run.status}: it takes no more metrics")


def points_checked(
    points: Iterable, nan_ok: bool = False
) -> list[tuple[int, str, float | None, int | None]]:
    """(step, key, value, timestamp ms or None) from dicts or sequences, each checked; an
    error names the point's index and field. A step is any int64 (MLflow's, negative too);
    with nan_ok (the MLflow door), a value of None is NaN."""
    out, keys_ok = [], set()
    for i, point in enumerate(points):
        if isinstance(point, dict):
            step, key, value, ts = (
                point.get("step", 0),
                point.get("key"),
                point.get("value"),
                point.get("timestamp"),
            )
        else:
            step, key, value, ts = (*point, None)[:4]
        where = f"points[{i}]"
        if isinstance(key, str) and key in keys_ok:
            pass  # a batch repeats a few keys: each is matched once
        elif not isinstance(key, str) or not KEY.match(key):
            raise invalid(
                f"{where}.key: 1 to 250 letters, digits, _ . - / : or spaces",
                field=f"{where}.key",
                status=422,
            )
        else:
            keys_ok.add(key)
        if (
            isinstance(step, bool)
            or not isinstance(step, int)
            or not INT64_MIN <= step <= INT64_MAX
        ):
            raise invalid(f"{where}.step: a 64-bit integer", field=f"{where}.step", status=422)
        if value is None and nan_ok:
            out.append((step, key, None, _timestamp(ts, where)))
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or (abs(value) > 1.7e308 and not nan_ok)  # MLflow keeps +-inf as +-max double
        ):
            raise invalid(f"{where}.value: a finite number", field=f"{where}.value", status=422)
        out.append((step, key, float(value), _timestamp(ts, where)))
    if len(out) > MAX_BATCH_POINTS:
        raise invalid(f"points: at most {MAX_BATCH_POINTS:,} a batch", field="points", status=413)
    return out


def _timestamp(ts, where: str) -> int | None:
    if ts is not None and (
        isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts <= INT64_MAX
    ):
        raise invalid(
            f"{where}.timestamp: milliseconds since the epoch",
            field=f"{where}.timestamp",
            status=422,
        )
    return ts


@transaction.atomic
def points_log(*, run: TrainingRun, points: Iterable, by, mlflow: bool = False) -> int:
    """Writes a batch of points (all or none) and moves the run's step and heartbeat. The
    native API takes points for a running run only; the MLflow door (mlflow=True) does as
    MLflow does: NaN points, and a finished run (not a deleted one) still takes them."""
    writable_require(run, by)
    checked = points_checked(points, nan_ok=mlflow)
    run = TrainingRun.objects.select_for_update().get(pk=run.pk)
    if not mlflow:
        _running(run)
    written = metric_store.points_ingest(
        ((run.pk, step, key, value, ts) for step, key, value, ts in checked), attempt=1
    )
    top = max((step for step, *_ in checked), default=run.step)
    TrainingRun.objects.filter(pk=run.pk).update(
        step=max(run.step, min(top, RUN_STEP_MAX)), heartbeat_at=timezone.now()
    )
    return written


@transaction.atomic
def params_log(*, run: TrainingRun, params, by) -> TrainingRun:
    """Adds parameters. A parameter is written once: logging it again with another value
    is a conflict (what MLflow does), the same value is a no-op."""
    writable_require(run, by)
    new = params_checked(params)
    run = TrainingRun.objects.select_for_update().get(pk=run.pk)
    for key, value in new.items():
        if key in run.params and run.params[key] != value:
            raise ServiceError(
                f"Parameter {key!r} was logged already with another value",
                status=409,
                errors=[FieldError(field=f"params.{key}", message="changed after it was logged")],
            )
    if len(run.params.keys() | new.keys()) > MAX_PARAMS:
        raise invalid(f"params: at most {MAX_PARAMS} a run", field="params", status=422)
    run.params = {**run.params, **new}
    run.save(update_fields=["params"])
    return run


@transaction.atomic
def tags_set(*, run: TrainingRun, tags, by, replace: bool = False) -> TrainingRun:
    """Adds or changes tags, on any run (queued or tracked): they describe it, they do not
    change what it trained."""
    membership_require(user=by, team=run.experiment.team, role=Role.MEMBER)
    active_require(run)
    new = tags_checked(tags)
    run = TrainingRun.objects.select_for_update().get(pk=run.pk)
    if not replace and len(run.tags.keys() | new.keys()) > MAX_TAGS:
        raise invalid(f"tags: at most {MAX_TAGS} a run", field="tags", status=422)
    run.tags = new if replace else {**run.tags, **new}
    run.save(update_fields=["tags"])
    return run


MAX_NOTES = 10_000


@transaction.atomic
def notes_set(*, run: TrainingRun, notes: str, by) -> TrainingRun:
    """A run's free-text notes (what was tried, what was seen), on any run."""
    membership_require(user=by, team=run.experiment.team, role=Role.MEMBER)
    if not isinstance(notes, str) or len(notes) > MAX_NOTES:
        raise invalid(f"notes: text of at most {MAX_NOTES:,} characters", field="notes", status=422)
    TrainingRun.objects.filter(pk=run.pk).update(notes=notes)
    run.notes = notes
    return run


def tags_from_text(text: str) -> dict:
    """Tags from the run page's box: one `name=value` a line (a name alone: an empty value)."""
    tags = {}
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        name, _, value = line.partition("=")
        if not name.strip():
            raise invalid(f"tags line {number}: name=value", field="tags", status=422)
        tags[name.strip()] = value.strip()
    return tags


@transaction.atomic
def run_end(
    *, run: TrainingRun, status: str, by, error: str = "", ended_at=None, name: str | None = None
) -> TrainingRun:
    """Ends a tracked run (succeeded, failed or cancelled). Ending it again with the same
    status is a no-op, so a client that retries after a lost answer is safe."""
    writable_require(run, by)
    if status not in TrainingRun.FINISHED and status != TrainingRun.Status.RUNNING:
        raise invalid(
            f"status: one of running, {', '.join(TrainingRun.FINISHED)}", field="status", status=422
        )
    run = TrainingRun.objects.select_for_update().get(pk=run.pk)
    if name is not None:
        if len(name) > 200:
            raise invalid("name: at most 200 characters", field="name", status=422)
        run.name = name
    if status != run.status:
        if run.status != TrainingRun.Status.RUNNING:
            raise Conflict(f"Run {run.pk} is {run.status} already")
        run.status = status
        if status in TrainingRun.FINISHED:
            run.finished_at = ended_at or timezone.now()
            run.error = (error or "")[:10_000]
    run.heartbeat_at = timezone.now()
    run.save()
    return run
