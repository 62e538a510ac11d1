"""experiments/search as MLflow's store answers it: the filter (read by run_filter, the one
grammar: attribute name, creation_time, last_update_time; tag.<key>), order_by (attributes,
several terms; by default creation_time DESC then experiment id), view_type and paging.

A team has tens of experiments, not millions: they are read once and filtered, sorted and
paged here, so the comparisons are exactly MLflow's (LIKE case-sensitive, ILIKE not, names
ordered by their characters' codes whatever the database's collation)."""

import re

from experiments import lifecycle, run_filter
from experiments.mlflow.messages import SearchExperiments
from experiments.mlflow.protocol import MlflowError, experiment_json, ms, offset_of
from experiments.models import Experiment
from finetune_hub.bounds import as_int
from finetune_hub.models import Team

STRINGS = ("name",)
NUMBERS = ("creation_time", "last_update_time", "experiment_id")
ORDER = re.compile(r"^\s*(?:attributes?\.)?(\w+)\s*(ASC|DESC)?\s*$", re.I)
DEFAULT_ORDER = ["creation_time DESC", "experiment_id ASC"]
FIELDS = (
    "id",
    "name",
    "created_at",
    "updated_at",
    "deleted_at",
    "tags",
    "mlflow_default",
    "artifact_location",
)


def _value(e: Experiment, key: str):
    if key == "name":
        return e.name
    if key == "creation_time":
        return ms(e.created_at)
    if key == "last_update_time":
        return ms(e.updated_at or e.created_at)
    return 0 if e.mlflow_default else e.pk  # experiment_id


def _compare(have, op: str, want) -> bool:
    if have is None:
        return op == "IS NULL"
    if op == "IS NOT NULL":
        return True
    if op in ("LIKE", "ILIKE"):
        flags = re.I | re.S if op == "ILIKE" else re.S
        return re.fullmatch(run_filter.like_regex(want)[1:-1], have, flags) is not None
    if op == "IN":
        return have in want
    if op == "NOT IN":
        return have not in want
    return {
        "=": have == want,
        "!=": have != want,
        "<": have < want,
        "<=": have <= want,
        ">": have > want,
        ">=": have >= want,
    }.get(op, False)


def _test(clause: run_filter.Clause):
    """The clause as a test of one experiment; MLflow's wording for what it refuses."""
    op, key = clause.op, clause.key
    items = clause.value if isinstance(clause.value, tuple) else (clause.value,)
    texts = tuple(i.text for i in items if i is not None)
    if clause.kind == "tags":
        if op not in ("=", "!=", "LIKE", "ILIKE", "IS NULL", "IS NOT NULL"):
            raise MlflowError(400, f"Invalid comparator for tag: {op}")
        return lambda e: _compare(e.tags.get(key), op, texts[0] if texts else None)
    if clause.kind != "attributes" or key not in STRINGS + NUMBERS:
        raise MlflowError(400, f"Invalid attribute key '{key[:60]}' specified.")
    if key in STRINGS:
        if op not in ("=", "!=", "LIKE", "ILIKE"):
            raise MlflowError(400, f"Invalid comparator for string attribute: {op}")
        return lambda e: _compare(_value(e, key), op, texts[0])
    if op not in ("=", "!=", "<", "<=", ">", ">="):
        raise MlflowError(400, f"Invalid comparator for numeric attribute: {op}")
    try:
        number = as_int(items[0].text.strip())
    except ValueError:
        raise MlflowError(400, f"Expected a numeric value for attribute '{key}'") from None
    return lambda e: _compare(_value(e, key), op, number)


def _sort(found: list[Experiment], order_by: list[str]) -> list[Experiment]:
    terms = []
    for term in order_by or DEFAULT_ORDER:
        match = ORDER.match(term)
        if not match or match.group(1) not in STRINGS + NUMBERS:
            raise MlflowError(400, f"Invalid order_by clause '{term[:80]}'.")
        terms.append((match.group(1), (match.group(2) or "ASC").upper() == "ASC"))
    if not any(key == "experiment_id" for key, _ in terms):
        terms.append(("experiment_id", False))
    for key, ascending in reversed(terms):  # stable sorts, the last term first
        found.sort(key=lambda e, k=key: _value(e, k), reverse=not ascending)
    return found


def experiments_page(user, team: Team, message: SearchExperiments) -> dict:
    lifecycle.experiment_default(team=team, by=user)  # MLflow's server always has it
    tests = [_test(c) for c in run_filter.parse(message.filter or "")]
    experiments = Experiment.objects.filter(team=team).only(*FIELDS)
    view = message.view_type or "ACTIVE_ONLY"
    if view == "ACTIVE_ONLY":
        experiments = experiments.filter(deleted_at=None)
    elif view == "DELETED_ONLY":
        experiments = experiments.exclude(deleted_at=None)
    found = [e for e in experiments if all(test(e) for test in tests)]
    found = _sort(found, message.order_by)
    limit, offset = message.max_results, offset_of(message.page_token)
    out = {"experiments": [experiment_json(e) for e in found[offset : offset + limit]]}
    if len(found) > offset + limit:
        out["next_page_token"] = str(offset + limit)
    return out
