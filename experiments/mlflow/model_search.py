"""search_logged_models: MLflow's filter of logged models (the one grammar's clauses on
name, model_id, model_type, status, source_run_id, creation_timestamp,
last_updated_timestamp, params.<k>, tags.<k>, metrics.<k>), its datasets and order_by, and
offset paging. Evaluated over the experiments' models, at most MAX_SCANNED of them."""

import operator
import re

from experiments import run_filter
from experiments.mlflow.protocol import MlflowError, ms, offset_of
from finetune_hub.bounds import as_float
from finetune_hub.errors import ServiceError

MAX_SCANNED = 10_000
STATUS = {"pending": "PENDING", "ready": "READY", "failed": "FAILED"}
ATTRIBUTES = {
    "name": lambda m: m.name,
    "model_id": lambda m: m.pk,
    "model_type": lambda m: m.model_type,
    "status": lambda m: STATUS[m.status],
    "source_run_id": lambda m: m.source_run_id,
    "creation_timestamp": lambda m: ms(m.created_at),
    "creation_time": lambda m: ms(m.created_at),
    "last_updated_timestamp": lambda m: ms(m.updated_at),
}
OPS = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _like(pattern: str, text: str, fold: bool) -> bool:
    pattern = re.escape(pattern).replace("%", ".*").replace("_", ".")
    return re.fullmatch(pattern, text, re.S | (re.I if fold else 0)) is not None


def parse(text: str | None) -> list:
    """(getter, op, value) per clause of the one filter grammar (experiments.run_filter:
    quoting, backquoted keys, AND outside quotes); a bad filter is 400 naming it."""
    try:
        clauses = run_filter.parse(text or "")
    except ServiceError as exc:
        raise MlflowError(400, exc.detail) from None
    out = []
    for clause in clauses:
        if clause.op not in (*OPS, "LIKE", "ILIKE", "IN", "NOT IN"):
            raise MlflowError(400, f"Unsupported operator {clause.op} in {clause.text[:200]!r}")
        try:
            values = tuple(
                v.coerced() for v in (clause.value if isinstance(clause.value, tuple) else ())
            )
            value = values if isinstance(clause.value, tuple) else clause.value.coerced()
        except ValueError as exc:
            raise MlflowError(400, f"{clause.text[:200]!r}: {exc}") from None
        if isinstance(value, int) and not isinstance(value, bool):
            value = as_float(value)  # compared as MLflow does, as a double
        field = f"{clause.kind}.{clause.key}"
        out.append((_getter(field, text or ""), clause.op, value))
    return out


def _getter(field: str, text: str):
    kind, _, key = field.partition(".") if "." in field else ("attributes", "", field)
    key = key.strip("`")
    if kind == "attributes" and key in ATTRIBUTES:
        return ATTRIBUTES[key]
    if kind == "params":
        return lambda m: m.params.get(key)
    if kind == "tags":
        return lambda m: m.tags.get(key)
    if kind == "metrics":
        return lambda m: _latest(m, key)
    raise MlflowError(400, f"Invalid attribute key '{field[:100]}' in filter {text[:200]!r}")


def _latest(model, key: str, dataset: dict | None = None):
    values = [
        x
        for x in model.metric_rows
        if x.key == key
        and (dataset is None or _on(x, dataset["dataset_name"], dataset.get("dataset_digest")))
    ]
    return max(values, key=lambda x: (x.timestamp, x.step, x.pk)).value if values else None


def _on(metric, name: str, digest: str | None) -> bool:
    return metric.dataset_name == name and (not digest or metric.dataset_digest == digest)


def _number(value) -> float | None:
    try:
        return as_float(value)
    except ValueError:
        return None


def _holds(model, conditions) -> bool:
    for getter, op, value in conditions:
        have = getter(model)
        if have is None:
            return False
        if op in ("IN", "NOT IN"):
            if (str(have) in {str(v) for v in value}) == (op == "NOT IN"):
                return False
            continue
        if op in ("LIKE", "ILIKE"):
            if not _like(str(value), str(have), op == "ILIKE"):
                return False
            continue
        if isinstance(value, float):
            have = _number(have)
            if have is None:
                return False
        if not OPS[op](have, value):
            return False
    return True


def page(models: list, message) -> tuple[list, str | None]:
    """The page of matching models, and the next page's token."""
    conditions = parse(message.filter)
    found = [m for m in models[:MAX_SCANNED] if _holds(m, conditions)]
    if message.datasets:
        found = [
            m
            for m in found
            if any(
                _on(x, d.dataset_name, d.dataset_digest)
                for x in m.metric_rows
                for d in message.datasets
            )
        ]
    found.sort(key=lambda m: (-ms(m.created_at), m.pk))
    for order in reversed(message.order_by):
        key = _order_key(order)
        present = [m for m in found if key(m) is not None]
        missing = [m for m in found if key(m) is None]
        present.sort(key=key, reverse=not order.ascending)
        found = present + missing
    offset = offset_of(message.page_token)
    limit = message.max_results
    rest = found[offset : offset + limit + 1]
    return rest[:limit], str(offset + limit) if len(rest) > limit else None


def _order_key(order):
    field = order.field_name
    if field.startswith("metrics."):
        key = field.removeprefix("metrics.").strip("`")
        dataset = (
            {"dataset_name": order.dataset_name, "dataset_digest": order.dataset_digest}
            if order.dataset_name
            else None
        )
        return lambda m: _latest(m, key, dataset)
    getter = ATTRIBUTES.get(field.removeprefix("attributes."))
    if getter is None:
        raise MlflowError(400, f"Invalid order_by field name: {field[:100]!r}")
    return getter
