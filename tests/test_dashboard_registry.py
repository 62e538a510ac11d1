import json

import pytest

from registry import services
from registry.models import AliasEvent, Feedback, ModelVersion, RegisteredModel
from tests.support.registry_helpers import trained_run


@pytest.fixture
def model(team, owner):
    return services.model_create(team=team, name="triage", by=owner)


def test_registry_pages_register_promote_generate_and_roll_back(
    browser_client, team, owner, tiny_model, model
):
    runs = [trained_run(team, owner, tiny_model, seed=1)]
    runs.append(trained_run(team, owner, tiny_model, seed=2, experiment=runs[0].experiment))
    assert browser_client.get("/registry/").status_code == 200
    for run in runs:
        browser_client.post("/registry/triage/register/", {"run": run.pk})
    assert ModelVersion.objects.count() == 2
    browser_client.post(
        "/registry/triage/promote/", {"version": 1, "alias": "production", "reason": "first"}
    )
    browser_client.post(
        "/registry/triage/promote/", {"version": 2, "alias": "production", "reason": "second"}
    )
    page = browser_client.get("/registry/triage/")
    assert page.status_code == 200 and 'id="alias-production">v2' in page.content.decode()
    browser_client.post(
        "/registry/triage/generate/", {"alias": "production", "prompt": "hi", "max_new_tokens": "4"}
    )
    generation_id = browser_client.session["last_generation"]["id"]
    browser_client.post("/registry/triage/feedback/", {"generation": generation_id, "rating": "1"})
    assert Feedback.objects.get().version.number == 2
    browser_client.post("/registry/triage/rollback/", {"alias": "production", "reason": "bad"})
    assert model.aliases.get(name="production").version.number == 1
    assert AliasEvent.objects.count() == 3
    version_page = browser_client.get("/registry/triage/v/1/")
    assert version_page.status_code == 200 and "Trained on" in version_page.content.decode()
    archive = browser_client.get("/registry/triage/v/1/export/adapter/")
    assert archive.status_code == 200 and archive["Content-Disposition"].endswith('adapter.zip"')


def test_policy_form_reports_bad_json_and_saves_good(browser_client, model):
    r = browser_client.post("/registry/triage/policy/", {"policy": "{not json"}, follow=True)
    assert "Policy is not JSON" in r.content.decode()
    bad = {"require_approval": "maybe", "thresholds": [{"metric": "bleu", "min": "high"}]}
    r = browser_client.post("/registry/triage/policy/", {"policy": json.dumps(bad)}, follow=True)
    shown = _messages(r)[0]
    # Each bad field is named in the message, not just "Invalid policy".
    assert "policy.require_approval" in shown and "policy.thresholds.0.min" in shown
    browser_client.post("/registry/triage/policy/", {"policy": '{"require_approval": true}'})
    model.refresh_from_db()
    assert model.policy["require_approval"] is True


def test_registry_pages_refuse_outsiders(browser_client, model, outsider):
    browser_client.force_login(outsider)
    assert browser_client.get("/registry/triage/").status_code == 404
    assert browser_client.post("/registry/triage/promote/", {"version": 1}).status_code == 404
    assert "triage" not in browser_client.get("/registry/").content.decode()
    assert RegisteredModel.objects.count() == 1


def test_unknown_registry_action_is_404(browser_client, model):
    assert browser_client.post("/registry/triage/explode/").status_code == 404


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_every_registry_action_confirms_and_registered_runs_are_not_offered_again(
    browser_client, team, owner, tiny_model, model
):
    first = trained_run(team, owner, tiny_model, seed=1)
    second = trained_run(team, owner, tiny_model, seed=2, experiment=first.experiment)
    offered = browser_client.get("/registry/triage/").context["runs"]
    assert {r.pk for r in offered} == {first.pk, second.pk}
    done = browser_client.post("/registry/triage/register/", {"run": first.pk}, follow=True)
    assert len(_messages(done)) == 1 and _messages(done)[0].startswith("Registered")
    assert [r.pk for r in done.context["runs"]] == [second.pk]
    browser_client.post("/registry/triage/register/", {"run": second.pk})
    steps = [
        (
            "promote",
            {"version": 1, "alias": "production", "reason": "a"},
            "production now points at v1",
        ),
        (
            "promote",
            {"version": 2, "alias": "production", "reason": "b"},
            "production now points at v2",
        ),
        ("rollback", {"alias": "production", "reason": "c"}, "Rolled production back to v1"),
        ("policy", {"policy": '{"require_approval": true}'}, "Policy saved"),
    ]
    for action, data, message in steps:
        r = browser_client.post(f"/registry/triage/{action}/", data, follow=True)
        assert message in _messages(r), (action, _messages(r))
    requested = browser_client.post(
        "/registry/triage/promote/", {"version": 2, "alias": "production", "reason": "d"}
    )
    assert requested.status_code == 302
    pending = model.promotion_requests.get()
    r = browser_client.post("/registry/triage/reject/", {"request": pending.pk}, follow=True)
    assert "Rejected: production -> v2" in _messages(r)
