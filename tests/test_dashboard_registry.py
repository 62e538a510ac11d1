import pytest

from registry import services
from registry.models import AliasEvent, Feedback, ModelVersion, RegisteredModel
from tests.registry_helpers import trained_run


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
