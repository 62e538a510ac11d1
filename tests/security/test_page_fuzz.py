"""Hostile query strings to every dashboard page a GET reaches (the URL patterns resolved, not
listed by hand), as the logged-in owner of a team with real objects: the parameters the pages
read (page, ids, filter, sort, a, b, ...) and a few they do not, each with a hostile value
(tests/support/hostile.py) or arbitrary text. No answer may be a 5xx."""

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from hypothesis import given
from hypothesis import strategies as st

from experiments import services
from tests.support.hostile import TEXT, fuzz_settings
from tests.support.training_helpers import make_experiment

EXAMPLES = 8  # per page: about 35 pages, about 20 s in all on 2 cores
OTHERS = ("/api/", "/mlflow/", "/admin/", "/accounts/", "/favicon.ico")
READ = [
    "page",
    "ids",
    "filter",
    "sort",
    "status",
    "q",
    "a",
    "b",
    "split",
    "order",
    "keys",
    "metric",
    "param",
    "show",
    "columns",
    "members",
    "team",
    "subject",
    "version",
    "zzz",
]


def _patterns(patterns, prefix=""):
    for p in patterns:
        if isinstance(p, URLResolver):
            yield from _patterns(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            yield "/" + prefix + str(p.pattern)


PAGES = sorted(
    p
    for p in set(_patterns(get_resolver().url_patterns))
    if not p.startswith(OTHERS) and "^" not in p
)


@pytest.fixture
def world(team, owner, tiny_model):
    experiment = make_experiment(team, owner, tiny_model)
    run = services.run_enqueue(experiment=experiment, by=owner, dispatch=False)
    return {
        "team_id": team.pk,
        "experiment_id": experiment.pk,
        "run_id": run.pk,
        "dataset_id": experiment.dataset_version.dataset_id,
        "number": experiment.dataset_version.number,
    }


def _url(page: str, world: dict, huge: bool) -> str:
    def fill(match):
        kind, name = match.groups()
        if kind in ("id", "int"):
            return str(2**64 if huge else world.get(name, 1))
        return "x"

    return re.sub(r"<(\w+):(\w+)>", fill, page)


def test_the_pages_are_found():
    assert len(PAGES) > 25 and "/runs/compare/" in PAGES and "/runs/table/" in PAGES


@pytest.mark.parametrize("page", PAGES)
def test_no_dashboard_page_answers_a_hostile_query_with_5xx(page, world, browser_client):
    @given(
        query=st.dictionaries(
            st.sampled_from(READ), st.sampled_from(TEXT) | st.text(max_size=30), max_size=4
        ),
        huge=st.booleans(),
    )
    @fuzz_settings(EXAMPLES)
    def fuzz(query, huge):
        r = browser_client.get(_url(page, world, huge), query)
        assert r.status_code < 500, (page, query, r.status_code)

    fuzz()
