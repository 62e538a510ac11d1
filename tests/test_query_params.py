"""A query parameter that an operation does not declare is refused, not ignored: a typo such as
?metric_keys=loss (the parameter is `keys`) answered every metric, and the caller never learnt
of it. Every operation of the API answers 422 in the one error shape, naming the unknown
parameter and the ones it takes (finetune_hub.api.refuse_unknown_query); declared ones, aliases
and the fields of a flattened schema (page, limit) among them, still work."""

import re

import pytest

from experiments import metric_store, services
from finetune_hub.api_errors import ErrorOut
from tests.support.openapi import label, operations
from tests.support.training_helpers import make_experiment

OPERATIONS = operations()
GETS = [op for op in OPERATIONS if op.method == "GET"]


def assert_unknown(response, *names: str) -> dict:
    assert response.status_code == 422, response.content
    body = response.json()
    ErrorOut.model_validate(body)
    assert body["code"] == "invalid"
    assert [e["field"] for e in body["errors"]] == sorted(names)
    for name in names:
        assert name in body["detail"]
    return body


@pytest.fixture
def run(team, owner, tiny_model):
    experiment = make_experiment(team, owner, tiny_model)
    run = services.run_enqueue(experiment=experiment, by=owner, dispatch=False)
    metric_store.points_ingest(
        (run.pk, step, key, 1.0 + step) for key in ("loss", "eval_loss") for step in range(5)
    )
    return run


# (1) The typo of the report.


def test_a_misspelt_keys_on_a_runs_metrics_is_refused(api, run):
    body = assert_unknown(api.get(f"/api/runs/{run.pk}/metrics", metric_keys="loss"), "metric_keys")
    # and the answer says what the operation takes, aliases as a client writes them
    assert "keys" in body["detail"] and "max_points" in body["detail"]
    assert "keys" in body["errors"][0]["message"]


def test_a_misspelt_keys_on_the_run_table_is_refused(api, run):
    body = assert_unknown(api.get("/api/runs", metric_keys="loss"), "metric_keys")
    for accepted in ("keys", "page", "limit", "filter", "sort"):
        assert accepted in body["detail"]


def test_every_unknown_parameter_is_named_with_the_declared_ones_beside_them(api, run):
    r = api.get(f"/api/runs/{run.pk}/metrics", keys="loss", zzz="1", metric_keys="loss")
    assert_unknown(r, "metric_keys", "zzz")


def test_an_operation_without_query_parameters_says_it_takes_none(api):
    body = assert_unknown(api.get("/api/teams", page="2"), "page")
    assert "no query parameters" in body["detail"]


# (2) The class: every operation of the API.


def test_there_are_operations_to_walk():
    assert len(GETS) > 20 and len(OPERATIONS) > len(GETS)


@pytest.mark.parametrize("operation", OPERATIONS, ids=label)
def test_every_operation_refuses_an_unknown_query_parameter(api, operation):
    method, path = operation.method, operation.path
    url = re.sub(r"{\w+}", "1", path) + "?bogus_param=1"
    r = api.client.generic(method, url, b"{}", "application/json", **api._headers())
    # Never silently accepted; a 404 or 401 only where it is reached before the operation.
    assert r.status_code in (401, 404, 422), (operation, r.status_code, r.content)
    if r.status_code == 422:
        assert_unknown(r, "bogus_param")


def test_every_authenticated_get_reaches_the_check(api):
    """The check comes before the route looks anything up: all of them answer 422."""
    statuses = {
        op.path: api.get(re.sub(r"{\w+}", "1", op.path), bogus_param="1").status_code for op in GETS
    }
    assert {path: s for path, s in statuses.items() if s != 422} == {}


def test_the_check_comes_after_authentication(anon_api):
    r = anon_api.get("/api/runs", metric_keys="loss")
    assert r.status_code == 401, r.content
    assert "keys" not in r.json()["detail"]


def test_an_unauthenticated_operation_refuses_them_too(anon_api):
    assert anon_api.get("/api/health").status_code == 200
    assert_unknown(anon_api.get("/api/health", bogus_param="1"), "bogus_param")


def test_the_schema_and_docs_pages_are_not_operations_and_take_any(api):
    assert api.get("/api/openapi.json", bogus_param="1").status_code == 200
    assert api.get("/api/docs", bogus_param="1").status_code == 200


def test_every_operation_documents_the_422(api):
    for operation in operations(api.get("/api/openapi.json").json()):
        assert "422" in operation.spec["responses"], operation.label


# (3) What is declared still works.


def test_the_aliased_keys_still_selects_the_metrics(api, run):
    r = api.get(f"/api/runs/{run.pk}/metrics", keys="loss", max_points=10)
    assert r.status_code == 200, r.content
    assert set(r.json()["metrics"]) == {"loss"}
    r = api.get(f"/api/runs/{run.pk}/metrics")
    assert r.status_code == 200 and set(r.json()["metrics"]) == {"loss", "eval_loss"}


def test_page_and_limit_of_a_flattened_schema_still_page(api, run):
    r = api.get("/api/runs", page=1, limit=1, keys="eval_loss", sort="-queued_at")
    assert r.status_code == 200, r.content
    assert r["X-Total-Count"] == "1"
    [row] = r.json()
    assert row["id"] == run.pk and set(row["metrics"]) == {"eval_loss"}
    assert api.get("/api/runs", page=2, limit=1).json() == []
    r = api.get("/api/experiments", page=1, limit=5)
    assert r.status_code == 200 and len(r.json()) == 1
    r = api.get("/api/runs/compare", ids=str(run.pk), keys="loss", page=1, limit=1)
    assert r.status_code == 200 and r.json()[0]["run"]["id"] == run.pk


def test_a_declared_parameter_with_a_bad_value_is_still_ninjas_422(api, run):
    r = api.get("/api/runs", page=0)
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["page"]
