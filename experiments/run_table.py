"""The runs table (the dashboard's Runs page, GET /api/runs and MLflow's runs/search): every
run of the user's teams, searched by words, filtered by the filter's clauses
(experiments.run_filter: the one grammar) and sorted by a column, a hyperparameter or a
metric's latest value."""

import re

from django.db.models import F, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Coalesce, NullIf

from experiments import run_filter
from experiments.models import MetricSeries, TrainingRun
from finetune_hub.errors import invalid
from finetune_hub.selectors import visible_to

TABLE_KEYS = ("loss", "eval_loss")  # the metric columns a run table shows by default

NAME = r"[A-Za-z0-9_.\-/]{1,250}"
COLUMNS = "queued_at|started_at|finished_at|step|status|id"
SORT = re.compile(rf"^(-?)(?:(metrics|params|tags)\.({NAME})|({COLUMNS}))$")
OPERATORS = {"=": "exact", "<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}


def _last_value(key: str):
    return Subquery(
        MetricSeries.objects.filter(run=OuterRef("pk"), key=key).values("last_value")[:1]
    )


def _param_sources(name: str) -> list:
    """Where a run's parameter is read, first found wins: a tracked run's own params, then
    its experiment's hyperparameters (technique and base_model: the experiment's columns,
    a tracked run's declared base model first)."""
    if name == "technique":
        return [F("experiment__technique")]
    if name == "base_model":
        return [NullIf(F("base_model"), Value("")), F("experiment__base_model")]
    if name == "dataset":  # the name of the dataset the run's experiment trained on
        return [F("experiment__dataset_version__dataset__name")]
    # A key transform names the key literally: no part of it becomes a lookup.
    return [KeyTransform(name, "params"), KeyTransform(name, "experiment__hyperparameters")]


def sort_value(kind: str, name: str):
    """What a run is sorted by for metrics.<key> (its latest value), params.<name> (where
    _param_sources reads it) or tags.<name>."""
    if kind == "metrics":
        return _last_value(name)
    if kind == "tags":
        return KeyTransform(name, "tags")
    sources = _param_sources(name)
    return sources[0] if len(sources) == 1 else Coalesce(*sources)


def _compared(name: str, op: str, value) -> Q:
    """The condition that a present value `name` meets `op value` (run_filter's operators)."""
    if op == "!=":
        return ~Q(**{name: value})
    if op in ("LIKE", "ILIKE"):
        lookup = "regex" if op == "LIKE" else "iregex"
        return Q(**{f"{name}__{lookup}": run_filter.like_regex(value)})
    if op in ("IN", "NOT IN"):
        hit = Q(**{f"{name}__in": list(value)})
        return hit if op == "IN" else ~hit
    return Q(**{f"{name}__{OPERATORS[op]}": value})


def _matching(runs: QuerySet, column: str, sources: list, op: str, value) -> QuerySet:
    """Runs whose first present source compares true; a run without the value matches no
    comparison, != and NOT IN included (IS NULL: none present; IS NOT NULL: one is)."""
    condition, absent = None, Q()
    for j, source in enumerate(sources):
        name = f"{column}_{j}"
        runs = runs.alias(**{name: source})  # not selected: only compared
        present = Q(**{f"{name}__isnull": False})
        if op in ("IS NULL", "IS NOT NULL"):
            absent &= ~present
            continue
        hit = _compared(name, op, value)
        hit = present & hit if op in ("!=", "NOT IN") else hit
        condition = absent & hit if condition is None else condition | (absent & hit)
        absent &= ~present
    if op == "IS NULL":
        return runs.filter(absent)
    if op == "IS NOT NULL":
        return runs.exclude(absent)
    return runs.filter(condition)


def _filtered(runs: QuerySet, clauses: list) -> QuerySet:
    """Runs meeting every clause of run_filter.checked."""
    for clause in clauses:
        kind, key, op, value = clause.kind, clause.key, clause.op, clause.value
        if kind == "attributes":  # a date column, or status
            if op in ("IN", "NOT IN"):
                hit = Q(**{f"{key}__in": list(value)})
                runs = runs.filter(hit if op == "IN" else ~hit)
            else:
                hit = Q(**{f"{key}__{OPERATORS.get(op, 'exact')}": value})
                runs = runs.filter(~hit if op == "!=" else hit)
            continue
        if kind == "metrics":
            sources = [_last_value(key)]
        elif kind == "tags":
            sources = [KeyTransform(key, "tags")]
        else:
            sources = _param_sources(key)
        runs = _matching(runs, f"f{clause.number - 1}", sources, op, value)
    return runs


def run_table(
    *,
    user,
    experiment: int | None = None,
    status: str | None = None,
    filter: str | list = "",
    sort: str = "-queued_at",
    q: str = "",
    lifecycle: str = "active",
) -> QuerySet[TrainingRun]:
    """Every run the user's teams own, filtered and sorted by any hyperparameter or latest
    metric value, as a queryset to page: `filter` is run_filter's grammar (clauses joined by
    AND, each `metrics.<key> <op> <value>`, `params.<name> <op> <value>`, `tags.<name> <op>
    <text>` or `queued_at|started_at|finished_at|status <op> <value>`), or clauses
    run_filter.parse already read; `sort` one of queued_at, started_at, finished_at, step,
    status, id, metrics.<key>, params.<name>, tags.<name>, with - for descending (runs
    without the value last)."""
    runs = visible_to(TrainingRun.objects, user=user, team_path="experiment__team")
    # Deleted runs (MLflow's lifecycle: experiments.lifecycle) are left out unless asked for.
    if lifecycle == "active":
        runs = runs.filter(deleted_at=None)
    elif lifecycle == "deleted":
        runs = runs.exclude(deleted_at=None)
    if experiment is not None:
        runs = runs.filter(experiment_id=experiment)
    if q := (q or "").strip()[:200]:
        # A word search over what names a run: its name, its experiment's, its notes, its
        # tags' text and its base model.
        runs = runs.filter(
            Q(name__icontains=q)
            | Q(experiment__name__icontains=q)
            | Q(notes__icontains=q)
            | Q(base_model__icontains=q)
            | Q(experiment__base_model__icontains=q)
            | Q(tags__icontains=q)
        )
    if status:
        if status not in TrainingRun.Status.values:
            raise invalid(
                f"status: one of {', '.join(TrainingRun.Status.values)}", field="status", status=422
            )
        runs = runs.filter(status=status)
    clauses = run_filter.parse(filter) if isinstance(filter, str) else list(filter)
    runs = _filtered(runs, run_filter.checked(clauses, statuses=TrainingRun.Status.values))
    match = SORT.match(sort or "")
    if not match:
        raise invalid(
            "sort: one of queued_at, started_at, finished_at, step, status, id, metrics.<key>, "
            "params.<name>, tags.<name>, with - for descending",
            field="sort",
            status=422,
        )
    descending, kind, name, column = match.groups()
    if kind:
        runs = runs.alias(sort_by=sort_value(kind, name))
        column = "sort_by"
    order = F(column).desc(nulls_last=True) if descending else F(column).asc(nulls_last=True)
    return runs.select_related("experiment", "worker").order_by(order, "-pk")
