"""Malformed requests answered with a 500 or with Django's HTML pages: a multipart body with a
missing or bad boundary, an unknown technique (a KeyError), an unknown URL under /api/ or a
bad Host header (HTML pages), and a bug's traceback. With DEBUG off, as in production, every
answer under /api/ is the one JSON error shape, and only a bug is a 500 (with no traceback);
pages outside /api/ keep Django's HTML."""

import pytest
from django.test import Client

from datasets_app import selectors
from datasets_app.models import Dataset
from finetune_hub.errors import ServiceError


@pytest.fixture(autouse=True)
def production(settings):
    settings.DEBUG = False


@pytest.fixture
def dataset(team, owner):
    return Dataset.objects.create(team=team, name="d", task="instruction", created_by=owner)


def assert_json(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) <= {"detail", "code", "errors"} and body["detail"]
    return body


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=" + "b" * 300,
        "multipart/form-data; boundary=\x00",
    ],
)
def test_a_missing_or_bad_multipart_boundary_is_a_400(api, owner, dataset, content_type):
    url = f"/api/datasets/{dataset.pk}/versions"
    body = assert_json(api.client.post(url, b"--x\r\n", content_type, **api._headers()), 400)
    assert body["detail"].startswith("Malformed multipart body")
    # A session reads the body for its CSRF token before the route does.
    session = Client(enforce_csrf_checks=True)
    session.force_login(owner)
    session.get("/")  # the CSRF cookie
    token = session.cookies["csrftoken"].value
    assert_json(session.post(url, b"--x\r\n", content_type, HTTP_X_CSRFTOKEN=token), 400)


def test_an_unknown_technique_is_a_field_error(api):
    r = api.post("/api/experiments/estimate", {"technique": "sorcery"})
    body = assert_json(r, 400)
    assert body["errors"][0]["field"] == "technique"


def test_an_unknown_api_url_is_a_json_404(api, anon_api, browser_client):
    assert_json(api.get("/api/no/such/route"), 404)
    assert_json(anon_api.get("/api/no/such/route"), 404)
    page = browser_client.get("/no/such/page/")
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")


def test_a_bad_host_is_a_json_400_under_api(api):
    assert_json(api.client.get("/api/teams", HTTP_HOST="evil.example", **api._headers()), 400)


def test_a_bug_is_a_json_500_with_no_traceback(api, monkeypatch):
    def bug(**kwargs):
        raise RuntimeError("/srv/secret/path leaked")

    monkeypatch.setattr(selectors, "datasets_for", bug)
    client = Client(raise_request_exception=False)
    r = client.get("/api/datasets", **api._headers())
    assert assert_json(r, 500) == {"detail": "Internal server error"}
    assert b"secret" not in r.content


def test_a_bug_still_reaches_the_test_client_and_the_log(api, monkeypatch, caplog):
    monkeypatch.setattr(selectors, "datasets_for", lambda **kw: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        api.get("/api/datasets")
    assert any(r.levelname == "ERROR" and r.exc_info for r in caplog.records)


def test_service_errors_keep_their_status(api, monkeypatch):
    def conflict(**kwargs):
        raise ServiceError("busy", status=409)

    monkeypatch.setattr(selectors, "datasets_for", conflict)
    assert assert_json(api.get("/api/datasets"), 409) == {"detail": "busy", "code": "conflict"}
