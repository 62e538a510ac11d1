"""Unvalidated or mis-routed security configuration: the promotion policy (the gate in
front of production) is set through a typed JSON body, validated field by field, by
approvers of the model's team only; nobody else can read or write it."""

import pytest

from registry import services
from registry.models import RegisteredModel
from tests.support.clients import ApiClient
from tests.support.training_helpers import make_version

URL = "/api/registry/models/triage/policy"
GOOD = {
    "gated_aliases": ["production", "staging"],
    "evaluation_dataset_version": 7,
    "thresholds": [{"metric": "chrf", "min": 40}],
    "require_approval": True,
}


@pytest.fixture
def model(team, owner):
    return services.model_create(team=team, name="triage", by=owner)


def _policy(model) -> dict:
    return RegisteredModel.objects.get(pk=model.pk).policy


def test_owner_sets_the_policy_with_a_json_body(api, model, team, owner):
    data = make_version(team, owner, n=30).pk  # the team's own: no other team's is taken
    r = api.put(URL, {**GOOD, "evaluation_dataset_version": data})
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["name"] == "triage"
    assert body["policy"]["thresholds"] == [{"metric": "chrf", "min": 40.0, "max": None}]
    stored = _policy(model)
    assert stored["require_approval"] is True and stored["gated_aliases"] == GOOD["gated_aliases"]
    assert stored["evaluation_dataset_version"] == data and stored["two_person_rule"] is False


def test_a_policy_judges_by_the_teams_own_data_only(api, model, outsider):
    """Another team's dataset version is answered like one that does not exist."""
    theirs = make_version(outsider.memberships.get().team, outsider, n=30).pk
    for data in (theirs, 999_999):
        r = api.put(URL, {**GOOD, "evaluation_dataset_version": data})
        assert r.status_code == 400, r.content
        assert r.json()["errors"] == [
            {
                "field": "policy.evaluation_dataset_version",
                "message": "No such dataset version in your teams",
            }
        ]
    assert _policy(model)["evaluation_dataset_version"] is None


def test_team_query_parameter_still_names_the_team(api, model, team):
    r = api.put(f"{URL}?team={team.pk}", {"require_approval": True})
    assert r.status_code == 200 and _policy(model)["require_approval"] is True


@pytest.mark.parametrize(
    "body, field",
    [
        ({"thresholds": [{"metric": "chrf"}]}, "thresholds"),  # neither min nor max
        ({"thresholds": [{"metric": "chrf", "min": 1}]}, ""),  # needs a dataset version
        ({"require_approval": "sometimes"}, "require_approval"),
        ({"evaluation_split": "everything"}, "evaluation_split"),
        ({"gate_everything": True}, "gate_everything"),  # unknown fields are refused
    ],
)
def test_an_invalid_policy_is_refused_field_by_field(api, model, body, field):
    before = _policy(model)
    r = api.put(URL, body)
    assert r.status_code == 422, r.content
    assert any(e["field"].startswith(field) for e in r.json()["errors"]), r.json()
    assert _policy(model) == before


def test_a_non_json_body_is_refused(api, model):
    r = api.client.put(URL, "require_approval=true", content_type="text/plain", **api._headers())
    assert r.status_code in (400, 422) and _policy(model)["require_approval"] is False


def test_it_validates_ownership(outsider_api, anon_api, model, team, member):
    before = _policy(model)
    assert outsider_api.put(URL, GOOD).status_code == 404
    assert outsider_api.put(f"{URL}?team={team.pk}", GOOD).status_code == 404
    assert anon_api.put(URL, GOOD).status_code == 401
    # a member of the team, but not an approver
    assert ApiClient(member).put(URL, GOOD).status_code == 403
    assert _policy(model) == before


def test_openapi_documents_the_body(api):
    operation = api.get("/api/openapi.json").json()["paths"]["/api/registry/models/{name}/policy"][
        "put"
    ]
    assert "requestBody" in operation and operation["requestBody"]["required"]
    assert {p["name"] for p in operation.get("parameters", [])} <= {"name", "team"}
