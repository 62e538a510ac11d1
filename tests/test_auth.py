import io
from contextlib import redirect_stdout

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.management import call_command
from django.test import Client, RequestFactory

from finetune_hub import idempotency
from finetune_hub.models import ApiToken


def test_health_needs_no_login(anon_api):
    assert anon_api.get("/api/health").json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/api/teams", "/api/datasets", "/api/tokens"])
def test_api_refuses_anonymous_callers(anon_api, path):
    r = anon_api.get(path)
    assert r.status_code == 401
    assert r.json()["detail"].startswith("Authentication required")


def test_bad_token_is_refused(db, owner):
    r = Client().get("/api/teams", HTTP_AUTHORIZATION="Bearer fth_not-a-real-token")
    assert r.status_code == 401


def test_token_is_stored_hashed_and_works(api, owner):
    stored = ApiToken.objects.get(user=owner)
    assert api.token not in (stored.token_hash, stored.prefix)
    assert stored.token_hash == ApiToken.hash(api.token)
    assert api.get("/api/teams").status_code == 200
    stored.refresh_from_db()
    assert stored.last_used_at is not None


def test_revoked_token_stops_working(api, owner):
    token_id = ApiToken.objects.get(user=owner).pk
    assert api.delete(f"/api/tokens/{token_id}").status_code == 204
    assert api.get("/api/teams").status_code == 401


def test_inactive_users_token_is_refused(api, owner):
    owner.is_active = False
    owner.save()
    assert api.get("/api/teams").status_code == 401


def test_create_api_token_command_prints_the_token_last(owner):
    out = io.StringIO()
    with redirect_stdout(out):
        call_command("create_api_token", "owner", stdout=out)
    raw = out.getvalue().split()[-1]
    r = Client().get("/api/teams", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert r.status_code == 200 and r.json()[0]["name"] == "Acme"


def test_session_post_needs_csrf(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    r = client.post("/api/teams", {"name": "Beta"}, content_type="application/json")
    assert r.status_code == 403
    assert client.get("/api/teams").status_code == 200  # safe methods need no token
    token = client.cookies["csrftoken"].value if "csrftoken" in client.cookies else None
    if token is None:
        client.get("/")  # a page with a form sets the CSRF cookie
        token = client.cookies["csrftoken"].value
    r = client.post(
        "/api/teams", {"name": "Beta"}, content_type="application/json", HTTP_X_CSRFTOKEN=token
    )
    assert r.status_code == 201, r.content


def test_bearer_post_needs_no_csrf(owner):
    from tests.support.clients import ApiClient

    api = ApiClient(owner)
    api.client = Client(enforce_csrf_checks=True)
    assert api.post("/api/teams", {"name": "Gamma"}).status_code == 201


def test_dashboard_pages_need_login(db):
    for path in ["/", "/datasets/", "/tokens/", "/datasets/1/"]:
        r = Client().get(path)
        assert r.status_code == 302 and r["Location"].startswith("/accounts/login/")


def test_login_page_logs_in(owner):
    client = Client()
    r = client.post("/accounts/login/", {"username": "owner", "password": "owner-pass-123"})
    assert r.status_code == 302
    assert client.get("/").status_code == 200


def test_token_page_shows_a_new_token_once(browser_client, owner):
    r = browser_client.post("/tokens/", {"name": "laptop"})
    raw = r.context["raw"]
    assert raw.startswith("fth_") and raw in r.content.decode()
    assert raw not in browser_client.get("/tokens/").content.decode()
    assert Client().get("/api/teams", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200


def test_api_docs_and_charts_need_no_cdn(browser_client):
    docs = browser_client.get("/api/docs").content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert browser_client.get("/api/openapi.json").status_code == 200


def test_schema_and_docs_need_authentication(anon_api, api):
    assert anon_api.get("/api/openapi.json").status_code == 401
    assert anon_api.get("/api/docs").status_code == 401
    assert api.get("/api/openapi.json").json()["info"]["title"] == "finetune_hub"


def test_tokens_are_private_to_their_user(api, outsider_api, owner):
    token_id = ApiToken.objects.get(user=owner).pk
    assert outsider_api.delete(f"/api/tokens/{token_id}").status_code == 404
    assert [t["name"] for t in outsider_api.get("/api/tokens").json()] == ["tests"]
    assert ApiToken.objects.filter(pk=token_id).exists()


def test_the_tokens_page_revokes_only_the_users_own_token(owner, outsider):
    from finetune_hub.auth import token_create

    mine, _ = token_create(user=owner, name="mine")
    theirs, _ = token_create(user=outsider, name="theirs")
    client = Client()
    client.force_login(owner)
    assert client.post("/tokens/", {"revoke": theirs.pk}).status_code == 302
    assert ApiToken.objects.filter(pk=theirs.pk).exists()
    page = client.post("/tokens/", {"revoke": "abc"}, follow=True)
    assert page.status_code == 200 and "revoke must be a whole number" in page.content.decode()
    assert client.post("/tokens/", {"revoke": mine.pk}).status_code == 302
    assert not ApiToken.objects.filter(pk=mine.pk).exists()


SCHEMES = ["Bearer", "bearer", "BEARER"]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_door_reads_the_bearer_header_alike(db, api, scheme):
    """The header is read in one place (finetune_hub.auth.bearer_token): the API, the schema
    page, the idempotency middleware and /mlflow accept the scheme in any case (RFC 7235),
    and refuse the same malformed headers."""
    client = Client()
    good = {"HTTP_AUTHORIZATION": f"{scheme} {api.token}"}
    assert client.get("/api/teams", **good).status_code == 200
    assert client.get("/api/openapi.json", **good).status_code == 200
    assert client.get("/mlflow/api/2.0/mlflow/experiments/search", **good).status_code == 200
    request = RequestFactory().post("/api/experiments/1/runs", **good)
    request.user = AnonymousUser()
    assert idempotency._caller(request) == api.user  # the key is kept per caller


@pytest.mark.parametrize(
    "header", ["", "Bearer", "Bearer ", "Basic abc", "Token fth_x", "Bearerfth_x"]
)
def test_malformed_bearer_headers_are_refused_everywhere(db, header):
    client = Client()
    auth = {"HTTP_AUTHORIZATION": header}
    assert client.get("/api/teams", **auth).status_code == 401
    assert client.get("/api/openapi.json", **auth).status_code == 401
    assert client.get("/mlflow/api/2.0/mlflow/experiments/search", **auth).status_code == 401
