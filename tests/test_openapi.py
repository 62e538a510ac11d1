"""The OpenAPI document is the contract: every operation says what it answers on success (a
schema, not an empty one) and which errors it can answer, and every error the API answers
has the one shape with a machine-readable code that belongs to its status."""

import pytest
from pydantic import BaseModel, ValidationError

from finetune_hub.api_errors import ErrorOut
from finetune_hub.errors import CODES, POLICY_REFUSED_STATUSES, code_of, from_pydantic
from finetune_hub.models import Role
from registry import services as registry
from registry.policy import Policy
from tests.support.clients import ApiClient, make_user
from tests.support.openapi import operations
from tests.support.registry_helpers import trained_run
from tests.support.training_helpers import make_experiment


@pytest.fixture
def document(api):
    r = api.get("/api/openapi.json")
    assert r.status_code == 200
    return r.json()


def typed(schema: dict) -> bool:
    """A reference to a component, or a type that says what is inside."""
    if "$ref" in schema:
        return True
    kind = schema.get("type")
    if kind == "array":
        return typed(schema.get("items", {}))
    if kind == "object":
        return bool(schema.get("properties")) or typed(schema.get("additionalProperties") or {})
    return kind == "string" and schema.get("format") == "binary"  # a file download


def statuses(operation) -> set[int]:
    return {int(status) for status in operation["responses"]}


def test_every_operation_documents_a_typed_success(document):
    untyped = []
    for op in operations(document):
        label, operation = op.label, op.spec
        successes = {s: r for s, r in operation["responses"].items() if 200 <= int(s) < 300}
        assert successes, label
        for status, response in successes.items():
            if int(status) == 204:
                assert "content" not in response, label
                continue
            schemas = [c.get("schema", {}) for c in response.get("content", {}).values()]
            if not schemas or not all(typed(s) for s in schemas):
                untyped.append(f"{label} {status}")
    assert untyped == []


def test_every_operation_documents_the_errors_it_answers(document):
    for op in operations(document):
        label, operation = op.label, op.spec
        where = {p["in"] for p in operation.get("parameters", [])}
        codes = statuses(operation)
        if operation.get("security"):
            assert 401 in codes, label
        else:
            assert label == "GET /api/health" and 401 not in codes
        if "path" in where:
            assert 404 in codes, label
        if "query" in where or "requestBody" in operation:
            assert 422 in codes, label
        assert 503 in codes, label  # no database connection: before any route


def test_each_documented_error_is_the_one_shape_with_its_codes(document):
    assert set(document["components"]["schemas"]["ErrorOut"]["properties"]["code"]["enum"]) == CODES
    refusing = set()
    for op in operations(document):
        label, operation = op.label, op.spec
        for status, response in operation["responses"].items():
            if not 400 <= int(status) < 500:
                continue
            schema = response["content"]["application/json"]["schema"]
            ref, codes = schema["allOf"]
            assert ref == {"$ref": "#/components/schemas/ErrorOut"}, label
            codes = set(codes["properties"]["code"]["enum"])
            if "policy_refused" in codes:
                refusing.add(f"{label} {status}")
                assert int(status) in POLICY_REFUSED_STATUSES
            assert codes - {"policy_refused"} == {code_of(int(status))}, (label, status)
    # Only a promotion meets the policy: the only operations whose errors say it may refuse.
    assert refusing == {
        "PUT /api/registry/models/{name}/aliases/{alias} 409",
        "POST /api/registry/models/{name}/promotions/{request_id}/{decision} 403",
        "POST /api/registry/models/{name}/promotions/{request_id}/{decision} 409",
    }


def test_routes_declare_their_own_errors(document):
    """What the shape of an operation cannot tell: conflicts, quotas, a role on a read."""
    paths = document["paths"]
    assert {409, 429} <= statuses(paths["/api/experiments/{experiment_id}/runs"]["post"])
    assert {409, 429} <= statuses(paths["/api/evaluations"]["post"])
    assert {403, 409} <= statuses(paths["/api/comparisons/{comparison_id}/next"]["get"])
    assert 404 in statuses(paths["/api/datasets"]["post"])  # the team named in the body
    assert 409 in statuses(paths["/api/registry/models/{name}/aliases/{alias}"]["put"])
    # and nothing a route cannot answer: a read changes no state, a list names no object
    assert not {403, 404, 409, 413} & statuses(paths["/api/teams"]["get"])
    assert 413 not in statuses(paths["/api/runs/{run_id}"]["get"])


def test_a_file_download_documents_its_media_type(document):
    export = document["paths"]["/api/registry/models/{name}/versions/{number}/export"]["get"]
    assert set(export["responses"]["200"]["content"]) == {"application/zip"}


# Real errors: each body has the shape, a code from the set and the status it belongs to.


def assert_error(response, status: int, code: str, document=None, operation=None) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    ErrorOut.model_validate(body)
    assert body["code"] == code and code in CODES
    assert code == code_of(status) or (
        code == "policy_refused" and status in POLICY_REFUSED_STATUSES
    )
    if document is not None:  # and the operation documents it
        path, method = operation
        assert status in statuses(document["paths"][path][method]), operation
    return body


def test_unauthenticated(anon_api):
    assert_error(anon_api.get("/api/teams"), 401, "unauthenticated")
    assert_error(anon_api.get("/api/openapi.json"), 401, "unauthenticated")


def test_not_found(api, document, outsider):
    assert_error(
        api.get("/api/runs/999999"), 404, "not_found", document, ("/api/runs/{run_id}", "get")
    )
    other_team = outsider.memberships.get().team_id
    r = api.post("/api/datasets", {"team": other_team, "name": "d", "task": "instruction"})
    assert_error(r, 404, "not_found", document, ("/api/datasets", "post"))
    assert_error(api.get("/api/no/such/route"), 404, "not_found")


def test_forbidden(team, document):
    viewer = make_user("viewer")
    team.memberships.create(user=viewer, role=Role.VIEWER)
    r = ApiClient(viewer).post("/api/datasets", {"team": team.pk, "name": "d", "task": "chat"})
    body = assert_error(r, 403, "forbidden", document, ("/api/datasets", "post"))
    assert "member role" in body["detail"]


def test_invalid(api, document):
    r = api.post("/api/teams", {"name": " "})  # the service's check: 400
    body = assert_error(r, 400, "invalid", document, ("/api/teams", "post"))
    assert body["errors"] == [{"field": "name", "message": "A team needs a name"}]
    r = api.post("/api/teams", {})  # ninja's validation: 422
    body = assert_error(r, 422, "invalid", document, ("/api/teams", "post"))
    assert body["errors"][0]["field"] == "name"
    r = api.get("/api/runs/queue", limit=0)
    assert_error(r, 422, "invalid", document, ("/api/runs/queue", "get"))


def test_conflict(api, document):
    assert api.post("/api/teams", {"name": "Twice"}).status_code == 201
    r = api.post("/api/teams", {"name": "Twice"})
    assert_error(r, 409, "conflict", document, ("/api/teams", "post"))


def test_quota(api, document, team, owner, tiny_model, settings):
    settings.TEAM_MAX_QUEUED_RUNS = 0
    experiment = make_experiment(team, owner, tiny_model)
    r = api.post(f"/api/experiments/{experiment.pk}/runs")
    body = assert_error(
        r, 429, "quota", document, ("/api/experiments/{experiment_id}/runs", "post")
    )
    assert "TEAM_MAX_QUEUED_RUNS=0" in body["detail"]


@pytest.fixture
def version(team, owner, tiny_model):
    model = registry.model_create(team=team, name="triage", by=owner)
    run = trained_run(team, owner, tiny_model, seed=1)
    return registry.version_register(model=model, run=run, by=owner)


ALIAS = ("/api/registry/models/{name}/aliases/{alias}", "put")
DECIDE = ("/api/registry/models/{name}/promotions/{request_id}/{decision}", "post")


def test_a_policy_refusal(api, document, version, owner):
    data = version.source_run.experiment.dataset_version_id
    rules = {"evaluation_dataset_version": data, "thresholds": [{"metric": "bleu", "min": 10}]}
    registry.policy_set(model=version.registered_model, policy=rules, by=owner)
    r = api.put("/api/registry/models/triage/aliases/production", {"version": 1, "reason": "go"})
    body = assert_error(r, 409, "policy_refused", document, ALIAS)
    assert body["errors"][0]["field"] == "thresholds"
    # A state the alias is already in is a plain conflict, not the policy's refusal.
    registry.policy_set(model=version.registered_model, policy={}, by=owner)
    promote = {"version": 1, "reason": "go"}
    assert api.put("/api/registry/models/triage/aliases/production", promote).status_code == 200
    r = api.put("/api/registry/models/triage/aliases/production", {"version": 1, "reason": "go"})
    assert_error(r, 409, "conflict", document, ALIAS)


def test_the_two_person_rule_is_a_policy_refusal(api, document, version, owner):
    rules = {"require_approval": True, "two_person_rule": True}
    registry.policy_set(model=version.registered_model, policy=rules, by=owner)
    r = api.put("/api/registry/models/triage/aliases/production", {"version": 1, "reason": "go"})
    assert r.status_code == 202
    r = api.post(f"/api/registry/models/triage/promotions/{r.json()['request']}/approve")
    body = assert_error(r, 403, "policy_refused", document, DECIDE)
    assert "Two-person rule" in body["detail"]


# from_pydantic: one conversion of pydantic's errors, naming the field's path.


def test_from_pydantic_names_the_field_path():
    with pytest.raises(ValidationError) as exc:
        Policy.model_validate({"thresholds": [{"metric": "bleu", "min": "high"}, {"metric": "x"}]})
    errors = from_pydantic(exc.value, under="policy")
    assert [e.field for e in errors] == ["policy.thresholds.0.min", "policy.thresholds.1"]
    assert errors[1].message == "threshold on x needs min or max"  # no "Value error, "
    assert [e.field for e in from_pydantic(exc.value.errors())] == [
        "thresholds.0.min",
        "thresholds.1",
    ]


def test_from_pydantic_keeps_a_field_named_like_a_request_location():
    class Model(BaseModel):
        path: int

    with pytest.raises(ValidationError) as exc:
        Model.model_validate({"path": "x"})
    assert [e.field for e in from_pydantic(exc.value, under="hyperparameters")] == [
        "hyperparameters.path"
    ]


def test_a_request_error_names_the_field_as_the_client_wrote_it(api, team):
    policy = {"thresholds": [{"metric": "bleu", "min": "high"}]}
    r = api.post("/api/registry/models", {"team": team.pk, "name": "m", "policy": policy})
    body = assert_error(r, 422, "invalid")
    assert [e["field"] for e in body["errors"]] == ["policy.thresholds.0.min"]
    r = api.post("/api/experiments/estimate", {"technique": "lora", "hyperparameters": {"path": 1}})
    body = assert_error(r, 422, "invalid")
    assert [e["field"] for e in body["errors"]] == ["hyperparameters.path"]
