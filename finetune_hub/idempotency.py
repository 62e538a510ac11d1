"""Idempotency-Key on the requests that create (a run, an evaluation, a comparison, a model
version) or move an alias (promote, roll back): the same key from the same user within 24
hours gets the first answer again instead of a second object. A client retrying after a
timeout, or a form submitted twice, creates one run. The API takes the header; the
dashboard's forms send a hidden idempotency_key drawn fresh each time a form is rendered
({% idempotency_key %}).

Only successful answers (2xx, 3xx) are kept: after a refusal or a failure the key is free,
so the client can fix the request and send it again. A second request with the key while
the first is still running waits for its answer (a double-click's second request is the one
the browser shows), and gets a 409 if it does not come within WAIT_S."""

import hashlib
import json
import re
import string
import time
import uuid
from datetime import timedelta

from django import template
from django.db import IntegrityError, transaction
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.html import format_html

from finetune_hub.auth import bearer_user
from finetune_hub.errors import FieldError, ServiceError
from finetune_hub.models import IdempotentRequest

HEADER = "Idempotency-Key"
FORM_FIELD = "idempotency_key"
KEPT_FOR = timedelta(hours=24)
WAIT_S = 10.0
VISIBLE = set(string.printable) - set(string.whitespace) | {" "}
# The URL names of the requests a key applies to: the API's and the dashboard's.
VIEWS = frozenset(
    {
        "api:queue_run",
        "api:create_evaluation",
        "api:create_comparison",
        "api:register_version",
        "api:promote",
        "api:rollback",
        "run_queue_new",
        "evaluation_new",
        "comparison_new",
        "model_register",
        "model_promote",
        "model_rollback",
    }
)


def applies(request) -> bool:
    match = request.resolver_match
    return request.method in ("POST", "PUT") and match is not None and match.view_name in VIEWS


def _key(request) -> str | None:
    if request.path.startswith("/api/"):
        return request.headers.get(HEADER)
    return request.headers.get(HEADER) or request.POST.get(FORM_FIELD)


def _caller(request):
    if request.user.is_authenticated:
        return request.user
    return bearer_user(request)


def _fingerprint(request) -> str:
    """What makes two requests the same one: method, path with query, and body (a form's
    fields but its CSRF token and key, which change with every rendering)."""
    digest = hashlib.sha256(f"{request.method} {request.get_full_path()}\n".encode())
    if request.path.startswith("/api/"):
        digest.update(request.body)
    else:
        fields = sorted(
            (name, values)
            for name, values in request.POST.lists()
            if name not in ("csrfmiddlewaretoken", FORM_FIELD)
        )
        digest.update(json.dumps(fields).encode())
    return digest.hexdigest()


def _refusal(request, status: int, detail: str, retry_after: int | None = None):
    error = ServiceError(
        detail=detail, status=status, errors=[FieldError(field=HEADER, message=detail)]
    )
    if request.path.startswith("/api/"):
        response = JsonResponse(error.as_dict(), status=status)
    else:
        response = HttpResponse(detail, status=status, content_type="text/plain")
    if retry_after:
        response["Retry-After"] = str(retry_after)
    return response


def _claim(user, key: str, fingerprint: str) -> tuple[IdempotentRequest | None, bool]:
    """(the record, whether this request is the first with the key)."""
    expired = timezone.now() - KEPT_FOR
    IdempotentRequest.objects.filter(user=user, created_at__lt=expired).delete()
    try:
        with transaction.atomic():
            record = IdempotentRequest.objects.create(user=user, key=key, fingerprint=fingerprint)
        return record, True
    except IntegrityError:
        return IdempotentRequest.objects.filter(user=user, key=key).first(), False


def _answered(record: IdempotentRequest) -> IdempotentRequest | None:
    """The first request's record once it has its answer; None if it failed meanwhile (its
    key freed) or WAIT_S passed."""
    deadline = time.monotonic() + WAIT_S
    while True:
        record = IdempotentRequest.objects.filter(pk=record.pk).first()
        if record is None or record.status is not None or time.monotonic() > deadline:
            return record
        time.sleep(0.1)


def _replay(record: IdempotentRequest) -> HttpResponse:
    response = HttpResponse(
        bytes(record.body), status=record.status, content_type=record.content_type or None
    )
    if record.location:
        response["Location"] = record.location
    response["Idempotent-Replayed"] = "true"
    return response


def _settle(record: IdempotentRequest, response) -> None:
    if 200 <= response.status_code < 400 and not response.streaming:
        IdempotentRequest.objects.filter(pk=record.pk).update(
            status=response.status_code,
            content_type=response.get("Content-Type", "")[:100],
            body=response.content,
            location=response.get("Location", "")[:2000],
        )
    else:
        record.delete()


class IdempotencyMiddleware:
    """After authentication (it keys on the caller) and CSRF (a form's key is read from a
    checked POST)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if record := getattr(request, "_idempotent_request", None):
            _settle(record, response)
        return response

    def process_view(self, request, view_func, view_args, view_kwargs):
        if not applies(request) or not (key := _key(request)):
            return None
        user = _caller(request)
        if user is None:
            return None  # the view answers 401, or the login page
        if len(key) > 255 or not set(key) <= VISIBLE:
            return _refusal(request, 422, f"{HEADER} is 1 to 255 visible ASCII characters")
        fingerprint = _fingerprint(request)
        record, first = _claim(user, key, fingerprint)
        if first:
            request._idempotent_request = record
            return None
        if record is not None and record.fingerprint != fingerprint:
            return _refusal(
                request, 422, f"This {HEADER} was sent with another request; use a new key"
            )
        record = record and _answered(record)
        if record is None:  # the first failed and freed the key: this one goes ahead
            return self.process_view(request, view_func, view_args, view_kwargs)
        if record.status is None:
            return _refusal(
                request,
                409,
                f"The first request with this {HEADER} is still running; try again shortly",
                retry_after=1,
            )
        return _replay(record)


def document(schema: dict) -> dict:
    """The header on each operation it applies to, in the OpenAPI document."""
    from django.urls import Resolver404, resolve

    parameter = {
        "in": "header",
        "name": HEADER,
        "required": False,
        "schema": {"type": "string", "maxLength": 255},
        "description": (
            "The same key from the same user within 24 hours answers with the first "
            "request's successful answer instead of creating again"
        ),
    }
    for path, operations in schema.get("paths", {}).items():
        try:
            match = resolve(re.sub(r"\{[^}]+\}", "1", path))
        except Resolver404:
            continue
        for method, operation in operations.items():
            if method in ("post", "put") and match.view_name in VIEWS:
                operation.setdefault("parameters", []).append(parameter)
    return schema


register = template.Library()


@register.simple_tag
def idempotency_key():
    """A hidden field with a key drawn for this rendering of the form."""
    return format_html('<input type="hidden" name="{}" value="{}">', FORM_FIELD, uuid.uuid4().hex)
