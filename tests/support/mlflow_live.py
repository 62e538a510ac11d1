"""The real mlflow client against a live server started by the test: the `hub` (its URL and
an API token of the owner) and `mlflow_env` (the mlflow module pointed at /mlflow with that
token, no retries) fixtures. Import both names into a test module to use them."""

import pytest

from finetune_hub.auth import token_create


@pytest.fixture
def hub(live_server, owner):
    return live_server.url, token_create(user=owner, name="live")[1]


@pytest.fixture
def mlflow_env(hub, monkeypatch):
    import mlflow

    url, token = hub
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"{url}/mlflow")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    mlflow.set_tracking_uri(f"{url}/mlflow")
    # An experiment set by an earlier test is not this server's (ids are not reused on
    # PostgreSQL): start from the default experiment, as a fresh process does.
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    yield mlflow
    while mlflow.active_run():
        mlflow.end_run()
