"""search_registered_models and search_model_versions: MLflow's filter grammar for the
registry (name, run_id, source_path, version_number and timestamps, tags.<key>) read by the
one filter parser (experiments.run_filter), ordering and paging as MLflow's store does.
Prompts (MLflow's prompt registry stores them as models tagged mlflow.prompt.is_prompt) are
left out unless the filter asks for them, as MLflow's store does."""

import re
from collections.abc import Callable

from experiments import run_filter
from experiments.mlflow.protocol import MlflowError, ms, offset_of
from finetune_hub.errors import ServiceError
from registry.mlflow.sources import PROMPT_TAG

TEXT_OPS = ("=", "!=", "LIKE", "ILIKE", "IN", "NOT IN")
NUMBER_OPS = ("=", "!=", "<", "<=", ">", ">=")
TAG_OPS = ("=", "!=", "LIKE", "ILIKE", "IS NULL", "IS NOT NULL")


def _text_test(op: str, value) -> Callable[[str], bool]:
    if op in ("IN", "NOT IN"):
        wanted = {str(v.text) for v in value}
        return (lambda x: x in wanted) if op == "IN" else (lambda x: x not in wanted)
    text = value.text
    if op in ("LIKE", "ILIKE"):
        pattern = re.compile(run_filter.like_regex(text), re.S | (re.I if op == "ILIKE" else 0))
        return lambda x: pattern.fullmatch(x) is not None
    return (lambda x: x == text) if op == "=" else (lambda x: x != text)


def _number_test(op: str, value, key: str) -> Callable[[int], bool]:
    try:
        number = int(value.text)
    except (AttributeError, ValueError):
        raise MlflowError(400, f"Invalid value for {key}: it is an integer") from None
    return {
        "=": lambda x: x == number,
        "!=": lambda x: x != number,
        "<": lambda x: x < number,
        "<=": lambda x: x <= number,
        ">": lambda x: x > number,
        ">=": lambda x: x >= number,
    }[op]


def _clause_test(clause, fields: dict[str, Callable]) -> Callable:
    if clause.kind == "tags":
        if clause.op not in TAG_OPS:
            raise MlflowError(400, f"Invalid comparator '{clause.op}' for a tag")
        key = clause.key
        if clause.op in ("IS NULL", "IS NOT NULL"):
            present = clause.op == "IS NOT NULL"
            return lambda row: (key in row.tags) == present
        test = _text_test(clause.op, clause.value)
        return lambda row: key in row.tags and test(row.tags[key])
    if clause.kind != "attributes" or clause.key not in fields:
        raise MlflowError(
            400,
            f"Invalid attribute key '{clause.key}' specified. Valid keys are '{set(fields)}'",
        )
    get, numeric = fields[clause.key]
    ops = NUMBER_OPS if numeric else TEXT_OPS
    if clause.op not in ops:
        raise MlflowError(400, f"Invalid comparator '{clause.op}' for attribute {clause.key}")
    test = (
        _number_test(clause.op, clause.value, clause.key)
        if numeric
        else _text_test(clause.op, clause.value)
    )
    return lambda row: test(get(row))


def _wants_prompts(clauses) -> bool:
    for c in clauses:
        if c.kind == "tags" and c.key == PROMPT_TAG and c.value is not None:
            text = str(c.value.text).lower() if hasattr(c.value, "text") else ""
            return (c.op == "=" and text == "true") or (c.op == "!=" and text == "false")
    return False


def filtered(rows: list, filter_text: str | None, fields: dict) -> list:
    try:
        clauses = run_filter.parse(filter_text or "")
    except ServiceError as exc:
        raise MlflowError(400, exc.detail) from None
    prompts = _wants_prompts(clauses)
    tests = [
        _clause_test(c, fields) for c in clauses if not (c.kind == "tags" and c.key == PROMPT_TAG)
    ]
    return [
        row
        for row in rows
        if (row.tags.get(PROMPT_TAG) == "true") == prompts and all(t(row) for t in tests)
    ]


def ordered(rows: list, order_by: list[str], keys: dict, default: list[tuple[str, bool]]):
    """Sorted by each `<key> [ASC|DESC]` of order_by, then by the defaults not named."""
    wanted, seen = [], set()
    for text in order_by:
        parts = text.strip().split()
        if not parts or len(parts) > 2 or parts[0] not in keys:
            raise MlflowError(400, f"Invalid order_by clause '{text}'.")
        if len(parts) == 2 and parts[1].upper() not in ("ASC", "DESC"):
            raise MlflowError(400, f"Invalid ordering key in order_by clause '{text}'.")
        if parts[0] in seen:
            raise MlflowError(400, f"`order_by` contains duplicate fields: {order_by}")
        seen.add(parts[0])
        wanted.append((parts[0], len(parts) == 1 or parts[1].upper() == "ASC"))
    wanted += [(k, asc) for k, asc in default if k not in seen]
    for key, ascending in reversed(wanted):
        rows.sort(key=keys[key], reverse=not ascending)
    return rows


def page(rows: list, max_results: int, token: str | None) -> tuple[list, str | None]:
    offset = offset_of(token)
    chunk = rows[offset : offset + max_results]
    return chunk, str(offset + max_results) if offset + max_results < len(rows) else None


MODEL_FIELDS = {"name": (lambda m: m.name, False)}
MODEL_ORDER = {
    "name": lambda m: m.name,
    "timestamp": lambda m: ms(m.updated_at or m.created_at),
    "last_updated_timestamp": lambda m: ms(m.updated_at or m.created_at),
    "creation_timestamp": lambda m: ms(m.created_at),
}
VERSION_FIELDS = {
    "name": (lambda v: v.registered_model.name, False),
    "run_id": (lambda v: v.run_ref or str(v.source_run_id or ""), False),
    "source_path": (lambda v: v.source, False),
    "version_number": (lambda v: v.number, True),
    "creation_timestamp": (lambda v: ms(v.created_at), True),
    "last_updated_timestamp": (lambda v: ms(v.updated_at or v.created_at), True),
}
VERSION_ORDER = {
    "name": lambda v: v.registered_model.name,
    "version_number": lambda v: v.number,
    "creation_timestamp": lambda v: ms(v.created_at),
    "last_updated_timestamp": lambda v: ms(v.updated_at or v.created_at),
    "timestamp": lambda v: ms(v.created_at),
}
