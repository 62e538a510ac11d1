"""MLflow's model registry over /mlflow, onto finetune_hub's registry: the real mlflow client
against a live server (models, versions from a run's artifacts, aliases through the promotion
policy with their history, search, tags, delete), and the Django test client for errors,
outsiders and missing tokens."""

import json

import pytest
from django.test import Client

from evaluation.subjects import Subject
from finetune_hub.auth import token_create
from finetune_hub.errors import ServiceError
from registry import export
from registry.models import AliasEvent, ModelVersion, RegisteredModel
from tests.support.registry_helpers import trained_run

API = "/mlflow/api/2.0/mlflow"


@pytest.fixture
def registry_client(live_server, owner, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token_create(user=owner, name="live")[1])
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    return MlflowClient(f"{live_server.url}/mlflow")


@pytest.mark.django_db(transaction=True)
def test_the_mlflow_client_drives_the_registry(registry_client, owner):
    from mlflow.exceptions import MlflowException

    client = registry_client
    name = "Test Model 1"
    client.create_registered_model(name, tags={"owner": "nlp"}, description="first")
    run = client.create_run(client.create_experiment("registry"))
    source = f"{run.info.artifact_uri}/model"
    v1 = client.create_model_version(name, source, run_id=run.info.run_id, tags={"k": "v"})
    assert (v1.version, v1.source, v1.run_id, v1.tags) == ("1", source, run.info.run_id, {"k": "v"})
    stored = ModelVersion.objects.get(registered_model__name=name, number=1)
    assert stored.source_run_id == int(run.info.run_id)  # lineage
    assert not stored.servable  # no weights here: a registry entry showing its source
    client.create_model_version(name, "s3://bucket/model")

    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "champion", "2")
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    events = list(AliasEvent.objects.filter(alias="champion").order_by("sequence"))
    assert [(e.from_version_id is None, e.to_version.number, e.actor) for e in events] == [
        (True, 1, owner),
        (False, 2, owner),
    ]
    model = client.get_registered_model(name)
    assert model.aliases == {"champion": "2"}
    assert (model.description, model.tags) == ("first", {"owner": "nlp"})

    # The policy gates production: the refusal names the failed rule.
    RegisteredModel.objects.filter(name=name).update(policy={"require_no_general_drop": True})
    with pytest.raises(MlflowException, match="general-capability set") as refused:
        client.set_registered_model_alias(name, "production", "2")
    assert refused.value.error_code == "INVALID_STATE"

    client.set_registered_model_tag(name, "stage", "beta")
    client.set_model_version_tag(name, "2", "checked", "yes")
    client.update_model_version(name, "2", description="from s3")
    found = client.search_model_versions(f"name = '{name}' AND tags.checked = 'yes'")
    assert [(v.version, v.description) for v in found] == [("2", "from s3")]
    assert [m.name for m in client.search_registered_models("name LIKE 'Test%'")] == [name]
    assert client.search_registered_models("tags.stage = 'alpha'") == []

    client.delete_registered_model_alias(name, "champion")
    assert AliasEvent.objects.filter(alias="champion").last().action == "remove"
    with pytest.raises(MlflowException, match="alias champion not found"):
        client.get_model_version_by_alias(name, "champion")
    client.create_registered_model("scratch")
    client.create_model_version("scratch", "s3://bucket/x")
    client.delete_model_version("scratch", "1")
    client.delete_registered_model("scratch")
    assert not RegisteredModel.objects.filter(name="scratch").exists()


def _post(client, path, body, token, method="post"):
    call = getattr(client, method)
    return call(
        f"{API}/{path}",
        json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


@pytest.mark.django_db
def test_sources_are_checked_as_mlflow_checks_them(owner):
    token = token_create(user=owner, name="t")[1]
    client = Client()
    assert _post(client, "registered-models/create", {"name": "m"}, token).status_code == 200
    for source, expected in [
        ("/tmp/model", "To use a local path as a model version"),
        ("mlflow-artifacts://host:9000/models/../../../", "If supplying a source as an http"),
        ("s3://bucket/a/..%2f..%2fb", "If supplying a source as an http"),
    ]:
        r = _post(client, "model-versions/create", {"name": "m", "source": source}, token)
        assert r.status_code == 400 and expected in r.json()["message"], r.json()
    ok = _post(client, "model-versions/create", {"name": "m", "source": "models:/m-1"}, token)
    assert ok.json()["model_version"]["version"] == "1"
    bad = _post(client, "registered-models/create", {"name": "a/b"}, token)
    assert bad.status_code == 400 and "cannot contain" in bad.json()["message"]
    dots = _post(client, "registered-models/create", {"name": ".."}, token)
    assert dots.status_code == 400 and "must not resolve" in dots.json()["message"]
    again = _post(client, "registered-models/create", {"name": "m"}, token)
    assert again.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"


@pytest.mark.django_db
def test_another_team_sees_nothing_and_a_token_is_required(owner, outsider):
    token = token_create(user=owner, name="t")[1]
    client = Client()
    _post(client, "registered-models/create", {"name": "mine"}, token)
    _post(client, "model-versions/create", {"name": "mine", "source": "s3://b/m"}, token)
    theirs = token_create(user=outsider, name="o")[1]
    for path, query in [
        ("registered-models/get", {"name": "mine"}),
        ("model-versions/get", {"name": "mine", "version": "1"}),
    ]:
        r = client.get(f"{API}/{path}", query, HTTP_AUTHORIZATION=f"Bearer {theirs}")
        assert (r.status_code, r.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
    alias = {"name": "mine", "alias": "x", "version": "1"}
    assert _post(client, "registered-models/alias", alias, theirs).status_code == 404
    listed = client.get(f"{API}/registered-models/search", HTTP_AUTHORIZATION=f"Bearer {theirs}")
    assert listed.json() == {"registered_models": []}
    anonymous = client.get(f"{API}/registered-models/get", {"name": "mine"})
    assert anonymous.status_code == 401


@pytest.mark.django_db
def test_registry_pages_show_mlflow_versions(owner):
    token = token_create(user=owner, name="t")[1]
    api = Client()
    _post(api, "registered-models/create", {"name": "Chat Model"}, token)
    body = {"name": "Chat Model", "source": "s3://bucket/chat", "description": "from mlflow"}
    _post(api, "model-versions/create", body, token)
    alias = {"name": "Chat Model", "alias": "a", "version": "1"}
    _post(api, "registered-models/alias", alias, token)
    page = Client()
    page.force_login(owner)
    detail = page.get("/registry/Chat Model/")
    assert detail.status_code == 200
    assert b"s3://bucket/chat" in detail.content and b"no files: not servable" in detail.content
    assert b"set through MLflow" in detail.content  # the alias history's reason
    version = page.get("/registry/Chat Model/v/1/")
    assert version.status_code == 200 and b"from mlflow" in version.content


@pytest.mark.django_db
def test_a_version_from_a_trained_runs_artifacts_takes_its_files(owner, team, tiny_model):
    run = trained_run(team, owner, tiny_model, seed=1)
    token = token_create(user=owner, name="t")[1]
    client = Client()
    _post(client, "registered-models/create", {"name": "served"}, token)
    body = {"name": "served", "source": f"runs:/{run.pk}/model", "run_id": str(run.pk)}
    answer = _post(client, "model-versions/create", body, token).json()["model_version"]
    assert answer["run_id"] == str(run.pk)
    version = ModelVersion.objects.get(registered_model__name="served")
    assert (version.source_run, version.kind, version.servable) == (run, "adapter", True)
    assert version.artifacts == run.output_files
    page = Client()
    page.force_login(owner)
    shown = page.get("/registry/served/v/1/").content.decode()
    assert f"/runs/{run.pk}/" in shown and "not servable" not in shown


@pytest.mark.django_db
def test_a_version_without_files_is_not_served_exported_or_evaluated(owner, team):
    token = token_create(user=owner, name="t")[1]
    _post(Client(), "registered-models/create", {"name": "remote"}, token)
    _post(Client(), "model-versions/create", {"name": "remote", "source": "s3://b/m"}, token)
    version = ModelVersion.objects.get(registered_model__name="remote")
    with pytest.raises(ServiceError, match="not servable"):
        export.archive(version, "adapter")
    with pytest.raises(ServiceError, match="not servable"):
        export.verified_folder(version)  # what the model server loads through
    with pytest.raises(ServiceError, match="not servable"):
        Subject.from_api({"model_version": version.pk}).for_team(team)


@pytest.mark.django_db
def test_a_removed_alias_is_in_its_history_and_rolls_back(owner, api):
    token = token_create(user=owner, name="t")[1]
    client = Client()
    _post(client, "registered-models/create", {"name": "hist"}, token)
    _post(client, "model-versions/create", {"name": "hist", "source": "s3://b/m"}, token)
    alias = {"name": "hist", "alias": "champion", "version": "1"}
    _post(client, "registered-models/alias", alias, token)
    gone = _post(client, "registered-models/alias", alias, token, method="delete")
    assert gone.status_code == 200
    history = api.get("/api/registry/models/hist/aliases/champion/history").json()
    assert [(e["action"], e["to_version"]) for e in history] == [("promote", 1), ("remove", None)]
    back = api.post("/api/registry/models/hist/aliases/champion/rollback", {"reason": "oops"})
    assert back.status_code == 200, back.json()
    got = client.get(
        f"{API}/registered-models/alias",
        {"name": "hist", "alias": "champion"},
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert got.json()["model_version"]["aliases"] == ["champion"]
