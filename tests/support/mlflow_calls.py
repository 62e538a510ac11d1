"""MLflow's side of a test: the real mlflow client against a live server (a token, no
retries), and one MLflow REST call through Django's test client."""

import json


def mlflow_client(url: str, token: str, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    return MlflowClient(f"{url}/mlflow")


def call(client, token: str | None, route: str, body: dict | None = None, *, get=None, team=None):
    """POST `body` (or GET the query `get`) to /mlflow[/teams/<team>]/api/2.0/mlflow/<route>;
    (status, JSON)."""
    prefix = f"/mlflow/teams/{team}" if team else "/mlflow"
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    url = f"{prefix}/api/2.0/mlflow/{route}"
    if get is not None:
        r = client.get(url, get, **headers)
    else:
        r = client.post(url, json.dumps(body or {}), content_type="application/json", **headers)
    return r.status_code, r.json()
