"""Hostile requests to every /mlflow endpoint, drawn from its request message
(experiments.mlflow.messages, which protocol.endpoint records on each view): each field gets a
plausible value (the team's run and experiment ids, a key, a number), a hostile one
(tests/support/hostile.py) or an arbitrary JSON value. No answer may be a 5xx: a bad shape is
MLflow's INVALID_PARAMETER_VALUE naming the parameter."""

import json

import pytest
from django.test import Client
from hypothesis import given
from hypothesis import strategies as st

from experiments import services
from experiments.mlflow.urls import routes
from finetune_hub.auth import token_create
from registry import catalog
from registry import services as registry
from registry.mlflow.urls import urlpatterns as registry_routes
from tests.support.hostile import JSON_ONLY, NON_FINITE, TEXT, _lone, fuzz_settings
from tests.support.training_helpers import make_experiment

EXAMPLES = 25  # per endpoint: 31 endpoints, about 25 s in all on 2 cores
ENDPOINTS = sorted(
    (str(r.pattern), r.callback)
    for r in [*routes, *registry_routes]
    if getattr(r.callback, "message", None) is not None
    and r.callback.message.model_fields
    and not str(r.pattern).startswith("ajax-")  # the same views again, for MLflow's UI
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


@pytest.fixture
def world(team, owner, tiny_model):
    experiment = make_experiment(team, owner, tiny_model)
    run = services.run_enqueue(experiment=experiment, by=owner, dispatch=False)
    model = registry.model_create(team=team, name="fuzz model", by=owner)
    catalog.version_record(model=model, source="s3://bucket/model", by=owner)
    return {"run": str(run.pk), "experiment": str(experiment.pk), "model": model.name}


def _plausible(name: str, world: dict):
    if name in ("run_id", "run_uuid"):
        return st.just(world["run"])
    if name.startswith("experiment_id"):
        one = st.sampled_from([world["experiment"], "0"])
        return st.lists(one, max_size=2) if name.endswith("s") else one
    if name in ("metrics", "params", "tags"):
        item = st.fixed_dictionaries(
            {"key": st.sampled_from(["loss", "lr"]), "value": st.sampled_from([1, "0.1", "NaN"])},
            optional={"step": st.integers(0, 5), "timestamp": st.integers(0, 2**41)},
        )
        return st.lists(item, max_size=3)
    if name in ("name", "new_name"):
        return st.just(world["model"])
    if name == "source":
        return st.sampled_from(["s3://b/m", f"runs:/{world['run']}/m", "/tmp/m", "models:/m-1"])
    return st.sampled_from(["1", "10", "loss", "metrics.loss = 1", "RUNNING", 5, "champion"])


def _message(model, world):
    fields = {
        name: _plausible(name, world) | st.sampled_from(TEXT + JSON_ONLY + NON_FINITE) | JSON
        for name in model.model_fields
    }
    return st.fixed_dictionaries({}, optional=fields)


@pytest.mark.parametrize("route, view", ENDPOINTS, ids=[e[0] for e in ENDPOINTS])
def test_no_mlflow_request_answers_5xx(route, view, world, owner):
    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token_create(user=owner, name='f')[1]}"}
    url = "/mlflow/" + route
    posts = "GET" not in view.methods or view.__name__ in ("experiment_search", "latest_versions")
    method = next(m for m in view.methods if m != "GET").lower() if posts else "get"

    @given(message=_message(view.message, world))
    @fuzz_settings(EXAMPLES)
    def fuzz(message):
        if posts:
            body = json.dumps(message)  # inf as Infinity, 10**400 as its digits, \ud800 escaped
            r = getattr(client, method)(url, body, content_type="application/json", **headers)
        else:
            query = {k: v if isinstance(v, str) else json.dumps(v) for k, v in message.items()}
            query = {k: v for k, v in query.items() if not _lone(v)}
            r = client.get(url, query, **headers)
        assert r.status_code < 500, (message, r.status_code, r.content[:300])
        if r.status_code >= 400:
            assert r.json()["error_code"] and r.json()["message"]

    fuzz()
