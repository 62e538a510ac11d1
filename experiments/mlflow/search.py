"""runs/search: MLflow's filter (read by experiments.run_filter, the run table's own
grammar; metrics, params and tags clauses are the run table's, MLflow's attributes are read
here), order_by (several terms; then start_time DESC and run id, MLflow's store's order),
run_view_type and paging. experiments/search is search_experiments'."""

import re
from dataclasses import replace
from datetime import UTC, datetime

from django.db.models import CharField, F, Q, Value
from django.db.models.functions import Cast, Coalesce, Concat, NullIf

from experiments import run_filter, run_table
from experiments.mlflow import search_experiments
from experiments.mlflow.messages import SearchExperiments, SearchRuns
from experiments.mlflow.protocol import (
    RUN_NAME_TAG,
    STATUS_IN,
    MlflowError,
    experiment_of,
    offset_of,
    run_json,
)
from experiments.models import MetricSeries
from finetune_hub.bounds import as_int
from finetune_hub.models import Team

ORDER = re.compile(
    r"^\s*(\w+)\.(`[^`]+`|\"[^\"]+\"|[\w.\-/: ]+?)"
    r"\s*(ASC|DESC)?\s*$",
    re.I,
)
BARE_ORDER = re.compile(r"^\s*(\w+)\s*(ASC|DESC)?\s*$", re.I)
# MLflow's attributes: the run's column (an alias search makes) and its kind.
TEXT_ATTRIBUTES = {
    "run_name": "mlflow_run_name",
    "user_id": "mlflow_user_id",
    "artifact_uri": "mlflow_artifact_uri",
    "run_id": "mlflow_run_id",
}
TIME_ATTRIBUTES = {"start_time": "started_at", "end_time": "finished_at", "created": "started_at"}
ATTRIBUTE_SORT = {**TEXT_ATTRIBUTES, **TIME_ATTRIBUTES, "status": "status"}
TEXT_OPS = ("=", "!=", "LIKE", "ILIKE", "IN", "NOT IN")
NUMBER_OPS = ("=", "!=", "<", "<=", ">", ">=")
LOOKUP = {"=": "exact", "<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}


def experiments_page(user, team: Team, message: SearchExperiments) -> dict:
    return search_experiments.experiments_page(user, team, message)


def _mlflow_columns(runs):
    """The aliases MLflow's text attributes compare: run_name (as protocol.run_json shows
    it), user_id (the client's, else the creator's name), artifact_uri and run_id as text."""
    return runs.alias(
        mlflow_run_name=Coalesce(
            NullIf(F("name"), Value("")),
            Concat(Value("run-"), Cast("pk", CharField()), output_field=CharField()),
        ),
        mlflow_user_id=Coalesce(NullIf(F("mlflow_user"), Value("")), F("created_by__username")),
        mlflow_run_id=Cast("pk", CharField()),
        mlflow_artifact_uri=Concat(
            Value("mlflow-artifacts:/"),
            Cast("experiment_id", CharField()),
            Value("/"),
            Cast("pk", CharField()),
            Value("/artifacts"),
            output_field=CharField(),
        ),
    )


def _status_clause(clause: run_filter.Clause) -> run_filter.Clause:
    """attributes.status by MLflow's names, as the run table's statuses."""
    if clause.op not in ("=", "!=", "IN", "NOT IN"):
        raise MlflowError(400, f"Invalid comparator '{clause.op}' for attribute status")
    items = clause.value if isinstance(clause.value, tuple) else (clause.value,)
    statuses = []
    for item in items:
        if item.text.strip() not in STATUS_IN:
            raise MlflowError(400, f"attributes.status: one of {', '.join(STATUS_IN)}")
        statuses.append(run_filter.Literal(str(STATUS_IN[item.text.strip()])))
    return replace(
        clause, value=tuple(statuses) if isinstance(clause.value, tuple) else statuses[0]
    )


def _attribute_q(clause: run_filter.Clause) -> Q:
    """An attribute clause run_filter's run table does not read, as a condition."""
    key, op = clause.key, clause.op
    items = clause.value if isinstance(clause.value, tuple) else (clause.value,)
    if key in TEXT_ATTRIBUTES:
        if op not in TEXT_OPS:
            raise MlflowError(400, f"Invalid comparator '{op}' for attribute {key}")
        column, texts = TEXT_ATTRIBUTES[key], [i.text for i in items]
        if op in ("IN", "NOT IN"):
            hit = Q(**{f"{column}__in": texts})
            return hit if op == "IN" else ~hit
        if op in ("LIKE", "ILIKE"):
            lookup = "regex" if op == "LIKE" else "iregex"
            return Q(**{f"{column}__{lookup}": run_filter.like_regex(texts[0])})
        hit = Q(**{column: texts[0]})
        return ~hit if op == "!=" else hit
    if key in TIME_ATTRIBUTES:
        if op not in NUMBER_OPS:
            raise MlflowError(400, f"Invalid comparator '{op}' for attribute {key}")
        try:
            when = datetime.fromtimestamp(as_int(items[0].text.strip()) / 1000, tz=UTC)
        except (ValueError, OverflowError, OSError):
            raise MlflowError(400, f"Expected a number of milliseconds for {key}") from None
        column = TIME_ATTRIBUTES[key]
        hit = Q(**{f"{column}__{LOOKUP.get(op, 'exact')}": when})
        return ~hit if op == "!=" else hit
    raise MlflowError(400, f"Invalid attribute key '{key[:60]}' specified.")


def filter_clauses(text: str) -> tuple[list[run_filter.Clause], list[Q]]:
    """MLflow's search filter as the run table's clauses (metrics, params, tags, status) and
    the conditions of MLflow's other attributes. A param's value is compared as it was
    logged, quoted or not ('0.01' compares as the number it was logged as); tags.mlflow.runName
    is the run's name."""
    clauses, conditions = [], []
    for clause in run_filter.parse(text):
        if clause.kind == "tags" and clause.key == RUN_NAME_TAG:
            clause = replace(clause, kind="attributes", key="run_name")
        if clause.kind == "attributes":
            if clause.key == "status":
                clauses.append(_status_clause(clause))
            else:
                conditions.append(_attribute_q(clause))
            continue
        if clause.kind == "params" and clause.value is not None:
            if isinstance(clause.value, tuple):
                value = tuple(run_filter.Literal(i.text) for i in clause.value)
            else:
                value = run_filter.Literal(clause.value.text)
            clause = replace(clause, value=value)
        clauses.append(clause)
    return clauses, conditions


def _order_term(term: str):
    """One order_by term as (what it names, the expression, ascending)."""
    match = ORDER.match(term)
    if match:
        kind, name, direction = match.groups()
        kind = run_filter.KINDS.get(kind.lower())
        if kind is None:
            raise MlflowError(400, f"Invalid order_by clause '{term[:80]}'.")
    else:
        match = BARE_ORDER.match(term)
        if not match:
            raise MlflowError(400, f"Invalid order_by clause '{term[:80]}'.")
        kind, (name, direction) = "attributes", match.groups()
    name = name.strip('`"')
    ascending = (direction or "ASC").upper() == "ASC"
    if kind == "tags" and name == RUN_NAME_TAG:
        kind, name = "attributes", "run_name"
    if kind == "attributes":
        column = ATTRIBUTE_SORT.get(name)
        if column is None:
            raise MlflowError(400, f"Invalid order_by attribute: {name[:40]}")
        return (kind, name), F(column), ascending
    return (kind, name), run_table.sort_value(kind, name), ascending


def _ordered(runs, order_by: list[str]):
    """MLflow's order: each term (runs without the value last), then start_time DESC unless
    a term named it, then the run id."""
    order, seen = [], set()
    for term in order_by:
        named, expression, ascending = _order_term(term)
        if named in seen:
            raise MlflowError(400, f"`order_by` contains duplicate fields: {order_by}")
        seen.add(named)
        alias = f"order_{len(order)}"
        runs = runs.alias(**{alias: expression})
        order.append(F(alias).asc(nulls_last=True) if ascending else F(alias).desc(nulls_last=True))
    if ("attributes", "start_time") not in seen:
        order.append(F("started_at").desc(nulls_last=True))
    return runs.order_by(*order, "pk")


VIEW = {"ACTIVE_ONLY": "active", "DELETED_ONLY": "deleted", "ALL": "all"}


def runs_page(user, team: Team, message: SearchRuns) -> dict:
    """The runs of the team (of the experiments named, if any) matching the filter, in
    order_by's order, a page at a time."""
    experiments = [experiment_of(team, i, user).pk for i in message.experiment_ids]
    clauses, conditions = filter_clauses(message.filter or "")
    lifecycle = VIEW[message.run_view_type or "ACTIVE_ONLY"]
    runs = run_table.run_table(user=user, filter=clauses, lifecycle=lifecycle)
    runs = runs.filter(experiment__team=team)
    if conditions or message.order_by:  # only then: user_id's alias joins the user table
        runs = _mlflow_columns(runs)
    for condition in conditions:
        runs = runs.filter(condition)
    if experiments:
        runs = runs.filter(experiment_id__in=experiments)
    runs = _ordered(runs, message.order_by)
    limit = message.max_results
    offset = offset_of(message.page_token)
    page = list(runs.select_related("created_by")[offset : offset + limit + 1])
    series: dict[int, list] = {}
    for s in (
        MetricSeries.objects.filter(run__in=page[:limit])
        .exclude(last_step=None)
        .only("run_id", "key", "last_step", "last_value")
    ):
        series.setdefault(s.run_id, []).append(s)
    out = {"runs": [run_json(r, series.get(r.pk, [])) for r in page[:limit]]}
    if len(page) > limit:
        out["next_page_token"] = str(offset + limit)
    return out
