"""Bodies that never arrive: an upload that declared 1 GiB and sent six bytes held a server
thread waiting for the rest. A body declared larger than its route's limit is now refused
(413) before a byte of it is read, on every route that takes a file and on every other
route (whose limit is DATA_UPLOAD_MAX_MEMORY_SIZE); a body that stops arriving is cut off
by the web server (tests/security/test_production_server.py) and answered 400, not 500."""

import pytest
from django.test import Client

from datasets_app.models import Dataset
from experiments import tracked
from tests.support.clients import ApiClient
from tests.support.probes import CountingInput

GIB = 1 << 30


class Stalled(CountingInput):
    """Six bytes, then a client that never sends the rest: the read times out."""

    def __init__(self):
        super().__init__(b"abcdef")

    def read(self, size=-1):
        chunk = super().read(size)
        if not chunk:
            raise TimeoutError("timed out")
        return chunk

    readline = read


@pytest.fixture
def run(team, owner):
    project = tracked.project_for(team=team, name="p", by=owner)
    return tracked.run_start(experiment=project, by=owner, name="r")


def send(client: Client, method: str, path: str, stream, declared: int, **headers):
    return client.generic(
        method,
        path,
        b"",
        "application/octet-stream",
        **{"wsgi.input": stream, "CONTENT_LENGTH": str(declared)},
        **headers,
    )


def bearer(user) -> dict:
    return ApiClient(user)._headers()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/datasets/{dataset}/versions"),
        ("PUT", "/api/runs/{run}/artifacts/model.safetensors"),
        ("PUT", "/mlflow/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run}/artifacts/a.json"),
        ("POST", "/datasets/{dataset}/upload/"),
        ("POST", "/api/teams"),
        ("POST", "/accounts/login/"),
    ],
)
def test_a_declared_length_over_the_limit_is_refused_unread(owner, run, method, path, settings):
    dataset = Dataset.objects.create(
        team=run.experiment.team, name="d", task="instruction", created_by=owner
    )
    url = path.format(dataset=dataset.pk, run=run.pk, experiment=run.experiment_id)
    settings.ARTIFACT_MAX_UPLOAD_BYTES = GIB - 1
    stream = CountingInput(b"abcdef")
    client = Client()
    client.force_login(owner)
    r = send(client, method, url, stream, GIB, **bearer(owner))
    assert r.status_code == 413, r.content
    assert stream.bytes_read == 0
    if path.startswith("/api/"):
        assert r.json()["code"] == "invalid" and "limit" in r.json()["detail"]
    elif path.startswith("/mlflow/"):
        assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_the_limits_are_each_routes_own(owner, run, settings):
    """An artifact may be far larger than a dataset file: a length over the dataset limit is
    still read on the artifact route."""
    settings.DATASET_MAX_UPLOAD_BYTES = 10
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10
    data = b'{"r": 8}' * 10
    r = ApiClient(owner).client.generic(
        "PUT",
        f"/api/runs/{run.pk}/artifacts/adapter_config.json",
        data,
        "application/octet-stream",
        **bearer(owner),
    )
    assert r.status_code == 422, r.content  # read and checked: not JSON, not a 413


def test_the_refusal_comes_before_authentication(db):
    stream = CountingInput(b"abcdef")
    r = send(Client(), "POST", "/api/datasets/1/versions", stream, GIB)
    assert r.status_code == 413 and stream.bytes_read == 0


@pytest.mark.parametrize("where", ["api", "mlflow"])
def test_a_body_that_stops_arriving_is_a_400_not_a_500(owner, run, where):
    path = (
        f"/api/runs/{run.pk}/artifacts/adapter_config.json"
        if where == "api"
        else f"/mlflow/api/2.0/mlflow-artifacts/artifacts/{run.experiment_id}/{run.pk}"
        "/artifacts/adapter_config.json"
    )
    r = send(Client(raise_request_exception=False), "PUT", path, Stalled(), 1000, **bearer(owner))
    assert r.status_code == 400, r.content
    message = r.json().get("detail") or r.json().get("message")
    assert "did not arrive whole" in message
    run.refresh_from_db()
    assert run.output_files == {}
