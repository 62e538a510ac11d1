"""Integers past what the database holds: an id, team, priority or version number beyond 64
bits (or beyond its column) reached the database driver and came back as OverflowError
(SQLite) or DataError (PostgreSQL), a 500. Every route must answer such a number with a 4xx
in the JSON error shape: ids and integers are bounded in the schemas, and what no schema
bounds is caught as out of range."""

import pytest
from django.db import DataError
from django.test import Client

from datasets_app import selectors
from registry.models import RegisteredModel
from tests.support.openapi import label, operations
from tests.support.probes import fill
from tests.support.training_helpers import make_experiment

HUGE = 2**70
WITH_INTEGER_PATH = [op for op in operations() if "integer" in op[2].values()]


@pytest.fixture
def objects(team, owner):
    """A model the string part of a registry path names, so the integer part is looked up."""
    return RegisteredModel.objects.create(team=team, name="x", created_by=owner)


def assert_4xx_json(response):
    assert 400 <= response.status_code < 500, (response.status_code, response.content)
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["detail"]


def test_routes_with_integer_path_parameters_are_found():
    assert len(WITH_INTEGER_PATH) > 20


@pytest.mark.parametrize("operation", WITH_INTEGER_PATH, ids=label)
def test_every_route_answers_a_path_id_past_64_bits_with_a_4xx(api, objects, operation):
    method, path, params, _ = operation
    r = api.client.generic(
        method, fill(path, params, integer=HUGE), b"{}", "application/json", **api._headers()
    )
    assert_4xx_json(r)


@pytest.fixture
def experiment(team, owner, tiny_model):
    return make_experiment(team, owner, tiny_model)


@pytest.mark.parametrize("number", [HUGE, -HUGE])
def test_integers_in_bodies_and_queries_answer_4xx(api, experiment, number):
    run = api.post(f"/api/experiments/{experiment.pk}/runs", {}).json()
    version = {"dataset": experiment.dataset_version.dataset_id, "number": 1}
    for response in (
        api.post("/api/datasets", {"team": number, "name": "n", "task": "instruction"}),
        api.get("/api/datasets", team=number),
        api.get("/api/experiments", team=number),
        api.post(f"/api/experiments/{experiment.pk}/runs", {"priority": number}),
        api.post(f"/api/runs/{run['id']}/priority", {"priority": number}),
        api.get(f"/api/runs/{run['id']}/metrics", max_points=number),
        api.get("/api/runs/compare", ids=f"{run['id']},{number}"),
        api.post(
            "/api/evaluations",
            {"subject": {"run": run["id"]}, "dataset_version": {**version, "dataset": number}},
        ),
        api.post("/api/evaluations", {"subject": {"run": run["id"]}, "dataset_version": number}),
    ):
        assert_4xx_json(response)


def test_a_priority_past_its_column_is_a_4xx(api, experiment):
    # 2**40 fits 64 bits but not PostgreSQL's integer column: the service bounds it.
    r = api.post(f"/api/experiments/{experiment.pk}/runs", {"priority": 2**40})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "priority"
    run = api.post(f"/api/experiments/{experiment.pk}/runs", {}).json()
    r = api.post(f"/api/runs/{run['id']}/priority", {"priority": 2**40})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "priority"


@pytest.mark.parametrize(
    "error",
    [
        OverflowError("Python int too large to convert to SQLite INTEGER"),
        DataError("integer out of range"),
    ],
)
def test_what_no_schema_bounded_is_a_4xx_too(api, monkeypatch, error):
    def fail(**kwargs):
        raise error

    monkeypatch.setattr(selectors, "datasets_for", fail)
    r = Client(raise_request_exception=False).get("/api/datasets", **api._headers())
    assert r.status_code == 422
    assert r.json() == {"detail": "A value in the request is out of range", "code": "invalid"}
