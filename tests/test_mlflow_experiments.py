"""MLflow's experiments through /mlflow (experiments/mlflow/, experiments.lifecycle): the
real mlflow client against a live server (create with tags and an artifact location, the
team's Default as "0", search's filter, order and view type, rename, tags, delete and
restore), MLflow's error wording, another team's experiments (404), no token (401), and the
dashboard's deleted experiment with its Restore button."""

import pytest

from experiments.models import Experiment, TrainingRun
from finetune_hub.auth import token_create
from tests.support.mlflow_calls import call, mlflow_client


@pytest.fixture
def token(owner):
    return token_create(user=owner, name="t")[1]


@pytest.mark.django_db(transaction=True)
def test_the_mlflow_client_manages_experiments(live_server, token, monkeypatch):
    from mlflow.entities import ViewType

    client = mlflow_client(live_server.url, token, monkeypatch)
    assert [e.name for e in client.search_experiments()] == ["Default"]
    assert client.get_experiment("0").name == "Default"
    first = client.create_experiment("a", artifact_location="s3://bucket/a", tags={"k": "v"})
    second = client.create_experiment("ab", tags={"k": "vaLue"})
    got = client.get_experiment(first)
    assert (got.artifact_location, got.tags, got.lifecycle_stage) == (
        "s3://bucket/a",
        {"k": "v"},
        "active",
    )
    assert [e.name for e in client.search_experiments(filter_string="name LIKE 'a%'")] == [
        "ab",
        "a",
    ]
    assert [e.name for e in client.search_experiments(filter_string="tag.k ILIKE '%V%'")] == [
        "ab",
        "a",
    ]
    assert [e.name for e in client.search_experiments(order_by=["name DESC"])] == [
        "ab",
        "a",
        "Default",
    ]
    page = client.search_experiments(max_results=2)
    assert len(page) == 2 and page.token
    assert [e.name for e in client.search_experiments(page_token=page.token)] == ["Default"]

    client.set_experiment_tag(second, "multi line", "x\ny")
    client.delete_experiment_tag(second, "k")
    client.rename_experiment(second, "renamed")
    got = client.get_experiment(second)
    assert (got.name, got.tags) == ("renamed", {"multi line": "x\ny"})

    run = client.create_run(first)
    client.delete_experiment(first)
    assert client.get_experiment(first).lifecycle_stage == "deleted"
    assert client.get_run(run.info.run_id).info.lifecycle_stage == "deleted"
    assert [e.name for e in client.search_experiments(view_type=ViewType.DELETED_ONLY)] == ["a"]
    assert "a" not in [e.name for e in client.search_experiments()]
    client.restore_experiment(first)
    assert client.get_experiment(first).lifecycle_stage == "active"
    assert client.get_run(run.info.run_id).info.lifecycle_stage == "active"
    # a run without an experiment goes to the team's Default, shown as "0"
    default_run = client.create_run("0")
    assert client.get_run(default_run.info.run_id).info.experiment_id == "0"


BAD = [
    ({"name": 123}, "Invalid value 123 for parameter 'name' supplied"),
    ({}, "Missing value for required parameter 'name'."),
    (
        {"name": "x", "artifact_location": 9.0},
        "Invalid value 9.0 for parameter 'artifact_location'",
    ),
    ({"name": "x", "tags": "5"}, "Invalid value \"5\" for parameter 'tags'"),
    ({"name": "x", "tags": [{"key": "bad\nkey", "value": "v"}]}, "tags"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("body, message", BAD)
def test_a_bad_experiment_is_refused_in_mlflows_words(client, token, body, message):
    status, answer = call(client, token, "experiments/create", body)
    assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert message in answer["message"]
    assert not Experiment.objects.filter(tracked=True).exists()


@pytest.mark.django_db
def test_lifecycle_errors_are_mlflows(client, token):
    status, answer = call(client, token, "experiments/delete", {"experiment_id": "0"})
    assert status == 400 and "default experiment" in answer["message"]
    _, made = call(client, token, "experiments/create", {"name": "e"})
    eid = made["experiment_id"]
    status, answer = call(client, token, "experiments/restore", {"experiment_id": eid})
    assert status == 400 and "active" in answer["message"]
    status, answer = call(
        client, token, "experiments/delete-experiment-tag", {"experiment_id": eid, "key": "no"}
    )
    assert status == 404 and answer["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    call(client, token, "experiments/create", {"name": "taken"})
    status, answer = call(
        client, token, "experiments/update", {"experiment_id": eid, "new_name": "taken"}
    )
    assert status == 400 and "already exists" in answer["message"]
    call(client, token, "experiments/delete", {"experiment_id": eid})
    status, answer = call(client, token, "runs/create", {"experiment_id": eid})
    assert status == 400 and "must be in the 'active' state" in answer["message"]
    status, answer = call(client, token, "experiments/search", {"filter": "colour = 'red'"})
    assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE"
    status, answer = call(client, token, "experiments/search", {"max_results": 50_001})
    assert status == 400
    assert "Invalid value 50001 for parameter 'max_results' supplied" in answer["message"]


@pytest.mark.django_db
def test_another_teams_experiment_is_not_found_and_a_token_is_required(
    client, token, outsider, team
):
    _, made = call(client, token, "experiments/create", {"name": "mine"})
    eid = made["experiment_id"]
    theirs = token_create(user=outsider, name="o")[1]
    for route, body in [
        ("experiments/delete", {"experiment_id": eid}),
        ("experiments/restore", {"experiment_id": eid}),
        ("experiments/update", {"experiment_id": eid, "new_name": "x"}),
        ("experiments/set-experiment-tag", {"experiment_id": eid, "key": "k", "value": "v"}),
        ("experiments/delete-experiment-tag", {"experiment_id": eid, "key": "k"}),
    ]:
        status, answer = call(client, theirs, route, body)
        assert status == 404 and answer["error_code"] == "RESOURCE_DOES_NOT_EXIST", route
        status, _ = call(client, theirs, route, body, team=team.pk)
        assert status == 404, route
        status, answer = call(client, None, route, body)
        assert status == 401, route
    # their Default is their own
    _, answer = call(client, theirs, "experiments/get", get={"experiment_id": "0"})
    assert answer["experiment"]["name"] == "Default"
    assert Experiment.objects.get(name="mine").deleted_at is None
    assert Experiment.objects.filter(mlflow_default=True).count() == 1  # theirs only


@pytest.mark.django_db
def test_the_dashboard_hides_a_deleted_experiment_and_restores_it(
    client, token, browser_client, outsider
):
    from django.test import Client

    _, made = call(client, token, "experiments/create", {"name": "gone"})
    _, run = call(client, token, "runs/create", {"experiment_id": made["experiment_id"]})
    call(client, token, "experiments/delete", {"experiment_id": made["experiment_id"]})
    assert "gone" not in browser_client.get("/experiments/").content.decode()
    page = browser_client.get(f"/experiments/{made['experiment_id']}/").content.decode()
    assert "deleted (MLflow)" in page and 'id="restore"' in page
    stranger = Client()
    stranger.force_login(outsider)
    r = stranger.post(f"/experiments/{made['experiment_id']}/restore/")
    assert r.status_code == 404
    r = browser_client.post(f"/experiments/{made['experiment_id']}/restore/")
    assert r.status_code == 302
    assert Experiment.objects.get(name="gone").deleted_at is None
    assert TrainingRun.objects.get(pk=run["run"]["info"]["run_id"]).deleted_at is None
    assert "gone" in browser_client.get("/experiments/").content.decode()
