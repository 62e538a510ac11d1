"""Authentication failures reported as something else: a write with no credentials, or with a
bad or revoked bearer token, was answered 403 "CSRF check failed" (the session check ran
before anyone was authenticated, and read the body of an unauthenticated caller). It must be
401 on every unsafe route; the CSRF check stays, and answers 403, for a logged-in session."""

import io

import pytest
from django.test import Client
from django.test.client import encode_multipart

from finetune_hub.auth import token_create
from finetune_hub.models import ApiToken
from tests.support.openapi import label, operations
from tests.support.probes import UNSAFE, CountingInput, fill

UNSAFE_OPERATIONS = [op for op in operations() if op[0] in UNSAFE]


def send(client: Client, operation, **headers):
    method, path, params, _ = operation
    return client.generic(
        method, fill(path, params, integer=1), b"{}", "application/json", **headers
    )


@pytest.fixture
def revoked_token(owner):
    token, raw = token_create(user=owner, name="old")
    ApiToken.objects.filter(pk=token.pk).delete()
    return raw


def assert_401(response):
    assert response.status_code == 401, response.content
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["detail"].startswith("Authentication required")


def test_there_are_unsafe_routes_to_check():
    assert len(UNSAFE_OPERATIONS) > 20


@pytest.mark.parametrize("operation", UNSAFE_OPERATIONS, ids=label)
def test_writes_without_credentials_answer_401(db, operation):
    assert_401(send(Client(enforce_csrf_checks=True), operation))


@pytest.mark.parametrize("operation", UNSAFE_OPERATIONS, ids=label)
def test_writes_with_a_bad_or_revoked_token_answer_401(operation, revoked_token):
    client = Client(enforce_csrf_checks=True)
    assert_401(send(client, operation, HTTP_AUTHORIZATION="Bearer fth_not-a-real-token"))
    assert_401(send(client, operation, HTTP_AUTHORIZATION=f"Bearer {revoked_token}"))


@pytest.mark.parametrize("operation", UNSAFE_OPERATIONS, ids=label)
def test_a_session_without_the_csrf_token_still_answers_403(owner, operation):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    r = send(client, operation)
    assert r.status_code == 403, r.content
    assert "CSRF" in r.json()["detail"]


def test_a_session_with_the_csrf_token_and_a_bad_bearer_token_is_the_session(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    client.get("/")  # the dashboard sets the CSRF cookie
    r = client.post(
        "/api/teams",
        {"name": "Beta"},
        content_type="application/json",
        HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value,
        HTTP_AUTHORIZATION="Bearer fth_not-a-real-token",
    )
    assert r.status_code == 201, r.content


def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(db):
    body = encode_multipart("XyZ", {"file": io.BytesIO(b"x" * 200_000)})
    stream = CountingInput(body)
    r = Client(enforce_csrf_checks=True).generic(
        "POST",
        "/api/datasets/1/versions",
        body,
        "multipart/form-data; boundary=XyZ",
        **{"wsgi.input": stream},
    )
    assert_401(r)
    assert stream.bytes_read == 0
