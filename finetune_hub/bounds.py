"""Bounds on what a client sends, checked where it is parsed: integers that the database can
hold, finite numbers, times that are instants, strings of a bounded length, and JSON nested no
deeper than any document of ours. Past them the answer is a 4xx that names the input, not an
OverflowError from the database driver or a RecursionError (a 500).

This is the one parser of client values: /api schemas (Id, Int64, PageNumber, TimeMs, Text),
the MLflow adapter's request messages, dashboard query strings and the filter language
(client_value, client_ids). tests/security/test_client_values.py checks that request-side
modules call no int() or float() of their own on what a client sent."""

import json
import math
import re
from datetime import UTC, datetime
from typing import Annotated

from annotated_types import Ge, Le, MaxLen
from ninja.parser import Parser
from pydantic import BeforeValidator

from finetune_hub.errors import invalid

INT64_MAX = 2**63 - 1  # a BigAutoField, and the widest integer SQLite and PostgreSQL store
# The documents of the API and the dataset formats nest a few levels (a chat: 3);
# json.loads recurses once per level, and so do json.dumps and every walk after it.
MAX_JSON_DEPTH = 64


def is_id(value) -> bool:
    """For ids that arrive inside free-form JSON (a {"dataset": id, "number": n} reference)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= INT64_MAX


class JSONTooDeep(ValueError):
    def __init__(self):
        super().__init__(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


class JSONLoneSurrogate(ValueError):
    def __init__(self):
        # RFC 8259 8.2: such a string is no text; no database stores it (UnicodeEncodeError).
        super().__init__("JSON with a lone surrogate (\\ud800-\\udfff) in a string")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _too_deep(value) -> bool:
    # Iterative, so that checking the depth cannot itself run out of stack.
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def json_loads(text: str | bytes):
    """json.loads with the nesting bounded: raises json.JSONDecodeError for bad syntax,
    JSONTooDeep past MAX_JSON_DEPTH (where json.loads itself would raise RecursionError) and
    JSONLoneSurrogate for a string no database can store."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise JSONTooDeep() from None
    if isinstance(value, (dict, list)) and _too_deep(value):
        raise JSONTooDeep()
    # Only an escape writes a lone surrogate (UTF-8 cannot): look for one before walking.
    escaped = (b"\\ud", b"\\uD") if isinstance(text, bytes) else ("\\ud", "\\uD")
    if any(e in text for e in escaped) and not _encodable(json.dumps(value, ensure_ascii=False)):
        raise JSONLoneSurrogate()
    return value


# ---------------------------------------------------------------------- client values
# Every number, id, page, time and name a client sends is read here, once: in a schema
# (the Annotated types below, which pydantic runs before its own checks) or by a function
# that names the field (query strings, the filter language, the dashboard). Python's own
# int() and float() are too lenient for that: int() takes "٣" (any Unicode digit), "1_000"
# and " 5 ", float() takes "1e400" (inf) and "nan", and neither bounds the result, so a
# value past int64 reached the database and a non-finite one int() (OverflowError).

INT64_MIN = -INT64_MAX - 1
INTEGER = re.compile(r"[+-]?[0-9]+")  # ASCII digits only
NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")
# Times: from the epoch to the end of year 9999, the range datetime and both databases hold.
MAX_TIME_MS = 253_402_300_799_999
MAX_TEXT = 10_000  # any one string a client sends that no narrower cap covers


def shown(value) -> str:
    """A client's value as an error message quotes it: its start, as repr writes it."""
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:40] + ("…" if len(text) > 40 else ""))


def as_int(value, lo: int = INT64_MIN, hi: int = INT64_MAX) -> int:
    """An integer from JSON (an int, not a bool) or text (ASCII digits, an optional sign), from
    lo to hi; ValueError saying what is wrong otherwise."""
    if isinstance(value, str) and INTEGER.fullmatch(value):
        # past 25 digits it is out of range anyway: no int() of a 1 MB number
        digits = value.lstrip("+-").lstrip("0")
        value = int(value) if len(digits) <= 25 else (-1 if value[0] == "-" else 1) * 10**25
    elif isinstance(value, float) and value.is_integer():
        value = int(value)  # 5.0 from a client that writes every number as a double
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("an integer (ASCII digits) is expected")
    if not lo <= value <= hi:
        raise ValueError(f"an integer from {lo} to {hi} is expected")
    return value


class NotFinite(ValueError):
    pass


def as_float(value) -> float:
    """A finite number from JSON (an int or a float) or text (ASCII, 1.5, -2e-3)."""
    if isinstance(value, str) and NUMBER.fullmatch(value):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("a number is expected")
    value = float(value) if abs(value) < 2**1023 else math.inf  # float(10**400) overflows
    if not math.isfinite(value):
        raise NotFinite("a finite number is expected")
    return value


def as_text(value, max_length: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise ValueError("a string is expected")
    if len(value) > max_length:
        raise ValueError(f"at most {max_length:,} characters are expected")
    if not _encodable(value):
        raise ValueError("a lone surrogate is no character")
    return value


def as_datetime(value) -> datetime:
    """An ISO 8601 date or date-time (UTC when it names no zone) that is a real instant: a
    zone that would move it before year 1 or past year 9999 cannot become UTC."""
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError("a date (2026-11-29 or 2026-11-29T08:00) is expected")
    try:
        value = datetime.fromisoformat(value)
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise ValueError("a date (2026-11-29 or 2026-11-29T08:00) in years 1 to 9999") from None


def _refused(field: str, value, problem: ValueError, status: int):
    return invalid(
        f"Invalid value {shown(value)} for parameter '{field}' supplied: {problem}",
        field=field,
        status=status,
    )


def client_value(parse, value, *, field: str, status: int = 422, **bounds):
    """`parse(value, **bounds)` (as_int, as_float, as_text, as_datetime), or a 4xx naming
    the field and the value."""
    try:
        return parse(value, **bounds)
    except ValueError as exc:
        raise _refused(field, value, exc, status) from None


def client_ids(text: str, *, field: str, status: int = 422) -> list[int]:
    """Comma-separated ids (1 to int64), in order, each once."""
    ids = [
        client_value(as_int, i.strip(), field=field, status=status, lo=1)
        for i in (text or "").split(",")
        if i.strip()
    ]
    return list(dict.fromkeys(ids))


def _validator(parse, **bounds):
    return BeforeValidator(lambda v: parse(v, **bounds))


# Every id, version number and page of the API; every other integer at least fits 64 bits.
# The bounds stand before the validator, so that the OpenAPI document gives them as
# minimum and maximum; the validator (as_int) still runs first.
# (annotated_types, not pydantic's Field: ninja would take a Field for the parameter's own
# and lose its default.)
Id = Annotated[int, Ge(1), Le(INT64_MAX), _validator(as_int)]
Int64 = Annotated[int, Ge(INT64_MIN), Le(INT64_MAX), _validator(as_int)]
# A page of at most 500 items: page * limit stays an int64 OFFSET.
MAX_PAGE = INT64_MAX // 500
PageNumber = Annotated[int, Ge(1), Le(MAX_PAGE), _validator(as_int)]
TimeMs = Annotated[int, Ge(0), Le(MAX_TIME_MS), _validator(as_int)]


def Integer(lo: int, hi: int):  # noqa: N802 (a type, as pydantic's conint is)
    """An integer from lo to hi (both within int64), read by as_int."""
    return Annotated[int, Ge(lo), Le(hi), _validator(as_int)]


def Text(max_length: int = MAX_TEXT):  # noqa: N802 (a type, as pydantic's constr is)
    return Annotated[str, MaxLen(max_length), _validator(as_text, max_length=max_length)]


class IdConverter:
    """A URL path's id: ASCII digits within int64 (finetune_hub.apps registers it as
    <id:...>); past that the URL matches nothing, a 404."""

    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        return as_int(value, lo=0)  # ValueError: Django tries the next pattern

    def to_url(self, value) -> str:
        return str(value)


class BoundedJSONParser(Parser):
    """Request bodies through json_loads; ninja answers a parse error with 400."""

    def parse_body(self, request):
        return json_loads(request.body)
