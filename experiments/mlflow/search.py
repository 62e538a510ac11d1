"""runs/search and experiments/search: MLflow's filter (read by experiments.run_filter, the
run table's own grammar, and given to the run table as clauses), order_by and paging."""

import re
from dataclasses import replace

from experiments import run_filter, run_table
from experiments.mlflow.messages import SearchExperiments, SearchRuns
from experiments.mlflow.protocol import (
    STATUS_IN,
    MlflowError,
    experiment_json,
    experiment_of,
    offset_of,
    run_json,
)
from experiments.models import Experiment, MetricSeries
from finetune_hub.models import Team

ORDER = re.compile(r"^\s*(metrics|params|attributes)\.(`[^`]+`|[\w.\-/]+)\s*(ASC|DESC)?\s*$", re.I)
ATTRIBUTE_SORT = {"start_time": "started_at", "end_time": "finished_at", "run_id": "id"}
STATUS_OPS = ("=", "!=", "IN", "NOT IN")


def experiments_page(team: Team, message: SearchExperiments) -> dict:
    """The team's experiments, newest first, a page at a time."""
    limit = message.max_results
    offset = offset_of(message.page_token)
    found = list(
        Experiment.objects.filter(team=team).order_by("-created_at", "-pk")[
            offset : offset + limit + 1
        ]
    )
    out = {"experiments": [experiment_json(e) for e in found[:limit]]}
    if len(found) > limit:
        out["next_page_token"] = str(offset + limit)
    return out


def filter_clauses(text: str) -> list[run_filter.Clause]:
    """MLflow's search filter as the run table's clauses: metrics and params clauses pass (a
    param's value is compared as it was logged, quoted or not, so that '0.01' compares as the
    number it was logged as); attributes.status selects statuses by MLflow's names."""
    out = []
    for clause in run_filter.parse(text):
        if clause.kind == "tags":
            raise MlflowError(400, "Filtering on tags is not supported")
        if clause.kind == "attributes":
            if clause.key != "status" or clause.op not in STATUS_OPS:
                raise MlflowError(400, "Only attributes.status = '<STATUS>' is supported")
            items = clause.value if isinstance(clause.value, tuple) else (clause.value,)
            statuses = []
            for item in items:
                if item.text.strip() not in STATUS_IN:
                    raise MlflowError(400, f"attributes.status: one of {', '.join(STATUS_IN)}")
                statuses.append(run_filter.Literal(str(STATUS_IN[item.text.strip()])))
            value = tuple(statuses) if isinstance(clause.value, tuple) else statuses[0]
            clause = replace(clause, value=value)
        elif clause.kind == "params" and clause.value is not None:
            if isinstance(clause.value, tuple):
                value = tuple(run_filter.Literal(i.text) for i in clause.value)
            else:
                value = run_filter.Literal(clause.value.text)
            clause = replace(clause, value=value)
        out.append(clause)
    return out


def sort_of(order: list[str]) -> str:
    """The run table's sort for MLflow's order_by (its first term)."""
    if not order:
        return "-queued_at"
    match = ORDER.match(order[0])
    if not match:
        raise MlflowError(400, f"Unsupported order_by: {order[0][:80]!r}")
    kind, name, direction = match.groups()
    name = name.strip("`")
    column = ATTRIBUTE_SORT.get(name) if kind == "attributes" else f"{kind}.{name}"
    if column is None:
        raise MlflowError(400, f"Unsupported order_by attribute: {name[:40]}")
    return ("-" if (direction or "ASC").upper() == "DESC" else "") + column


def runs_page(user, team: Team, message: SearchRuns) -> dict:
    """The runs of the team (of the experiments named, if any) matching the filter, in
    order_by's order, a page at a time."""
    experiments = [experiment_of(team, i).pk for i in message.experiment_ids]
    clauses = filter_clauses(message.filter or "")
    sort = sort_of(message.order_by)
    runs = run_table.run_table(user=user, filter=clauses, sort=sort)
    runs = runs.filter(experiment__team=team)
    if experiments:
        runs = runs.filter(experiment_id__in=experiments)
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
