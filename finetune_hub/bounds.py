"""Bounds on what a client sends, checked where it is parsed: integers that the database can
hold and JSON nested no deeper than any document of ours. Past them the answer is a 4xx that
names the input, not an OverflowError from the database driver or a RecursionError (a 500)."""

import json
from typing import Annotated

from annotated_types import Ge, Le
from ninja.parser import Parser

INT64_MAX = 2**63 - 1  # a BigAutoField, and the widest integer SQLite and PostgreSQL store
# The documents of the API and the dataset formats nest a few levels (a chat: 3);
# json.loads recurses once per level, and so do json.dumps and every walk after it.
MAX_JSON_DEPTH = 64

# Every id, version number and page of the API; every other integer at least fits 64 bits.
# (annotated_types, not pydantic's Field: ninja would take a Field for the parameter's own
# and lose its default.)
Id = Annotated[int, Ge(1), Le(INT64_MAX)]
Int64 = Annotated[int, Ge(-INT64_MAX - 1), Le(INT64_MAX)]


def is_id(value) -> bool:
    """For ids that arrive inside free-form JSON (a {"dataset": id, "number": n} reference)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= INT64_MAX


class JSONTooDeep(ValueError):
    def __init__(self):
        super().__init__(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


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
    """json.loads with the nesting bounded: raises json.JSONDecodeError for bad syntax and
    JSONTooDeep past MAX_JSON_DEPTH (where json.loads itself would raise RecursionError)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise JSONTooDeep() from None
    if isinstance(value, (dict, list)) and _too_deep(value):
        raise JSONTooDeep()
    return value


class BoundedJSONParser(Parser):
    """Request bodies through json_loads; ninja answers a parse error with 400."""

    def parse_body(self, request):
        return json_loads(request.body)
