"""Hostile values for the fuzzes (tests/security/test_api_fuzz.py, test_mlflow_fuzz.py,
test_page_fuzz.py): numbers past every bound, digits that are not ASCII, very long names and
strings no database stores. Each stands for a class issue 29's probe found."""

import math

from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

# What a URL can carry (text) and what only a JSON body can (numbers, lone surrogates).
TEXT = [
    "1e400",
    "-1e400",
    "-0",
    "²",
    "٣",
    "1_000",
    " 7",
    "NaN",
    "Infinity",
    str(2**63),
    str(2**64),
    str(-(2**63) - 1),
    "9" * 30,
    "0x10",
    "",
    "x" * 10_000,
    "é" * 5000,
    "1,²,3",
    "metrics.loss = 1" + " " * 3000 + "x",
    "0001-01-01T00:00:00+23:59",
]
JSON_ONLY = [
    2**63,
    2**64,
    -(2**63) - 1,
    10**400,
    -0.0,
    "\ud800",
    "a\udfffb",
    True,
    [],
    {},
    [["x"]],
    {"key": ["x"]},
]
# json.dumps writes these as Infinity and NaN, which json.loads reads (requests refuses them)
NON_FINITE = [math.inf, -math.inf, math.nan]
VALUES = TEXT + JSON_ONLY


def _keys(container) -> list:
    return sorted(container) if isinstance(container, dict) else []


@st.composite
def hostile_case(draw):
    """A function that puts one hostile value into one field of a schemathesis case (path,
    query or body), True when it found a field to put it in."""
    value = draw(st.sampled_from(VALUES))
    slot = draw(st.integers(0, 1000))

    def put(case) -> bool:
        places = [("path_parameters", k) for k in _keys(case.path_parameters)]
        places += [("query", k) for k in _keys(case.query)]
        places += [("body", k) for k in _keys(case.body)]
        if not isinstance(value, str) or _lone(value):
            # A URL and a form (multipart) carry UTF-8 text only: numbers and lone surrogates
            # reach a JSON body.
            json_body = "json" in (getattr(case, "media_type", None) or "application/json")
            places = [p for p in places if p[0] == "body" and json_body]
        if not places:
            return False
        where, key = places[slot % len(places)]
        container = dict(getattr(case, where))
        container[key] = value
        setattr(case, where, container)
        return True

    return put


def _lone(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def fuzz_settings(examples: int):
    """The three fuzzes' hypothesis settings: a fixed number of examples, the same ones on
    every run (derandomised, no example database), and no deadline (a request's time is not
    what they check)."""
    return hypothesis_settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
