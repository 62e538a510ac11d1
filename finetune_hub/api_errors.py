"""Every error under /api/ in the one JSON shape, {"detail": ..., "code": ..., "errors": [...]}:
ninja's exception handlers for what a route raises, and Django's handler400/403/404/500 for
what never reaches a route (an unknown URL, a bad Host, a failure in a middleware). Elsewhere
Django's own pages answer. Bad input is a 4xx here whichever layer noticed it; only a bug is
a 500, logged as Django logs one, with no traceback in the answer. Every 4xx carries its
code (finetune_hub.errors.Code); a 5xx has none."""

import logging
from typing import Literal

from django.core import signals
from django.core.exceptions import BadRequest, RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import DataError
from django.http import Http404, JsonResponse, UnreadablePostError
from django.http.multipartparser import MultiPartParserError
from django.views import defaults
from ninja import Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError
from pydantic.json_schema import SkipJsonSchema

from finetune_hub.errors import (
    POLICY_REFUSED_STATUSES,
    Code,
    ServiceError,
    code_of,
    from_pydantic,
)
from finetune_hub.uploads import UNREADABLE, upload_refusal

logger = logging.getLogger("django.request")


def error_body(status: int, detail: str) -> dict:
    """The body of an error raised as something other than a ServiceError."""
    return ServiceError(detail=detail, status=status).as_dict()


def register(api) -> None:
    """Installs one handler per exception the API can meet, each turning it into the one
    error shape; they are closures over `api`, so they stand here together (hence the length)."""

    def error(request, status: int, detail: str):
        return api.create_response(request, error_body(status, detail), status=status)

    @api.exception_handler(ServiceError)
    def service_error(request, exc: ServiceError):
        return api.create_response(request, exc.as_dict(), status=exc.status)

    @api.exception_handler(ValidationError)
    def validation_error(request, exc: ValidationError):
        # A file stopped for its size is missing from the request: say why, not "required".
        if refusal := upload_refusal(request):
            return service_error(request, refusal)
        invalid = ServiceError(detail="Invalid input", status=422, errors=from_pydantic(exc))
        return service_error(request, invalid)

    @api.exception_handler(AuthenticationError)
    def authentication_error(request, exc):
        return error(request, 401, "Authentication required: a session or a bearer token")

    @api.exception_handler(Http404)
    def not_found(request, exc):
        return error(request, 404, "Not found")

    @api.exception_handler(HttpError)
    def http_error(request, exc: HttpError):
        return error(request, exc.status_code, str(exc))

    @api.exception_handler(DjangoPermissionDenied)
    def forbidden(request, exc):
        return error(request, 403, "Forbidden")

    @api.exception_handler(MultiPartParserError)
    def bad_multipart(request, exc):
        return error(request, 400, f"Malformed multipart body: {exc}")

    @api.exception_handler(SuspiciousOperation)
    def suspicious(request, exc):
        if isinstance(exc, RequestDataTooBig):
            return error(request, 413, "The request body is larger than the server accepts")
        logger.warning("Bad request to %s: %s", request.path, exc)
        return error(request, 400, "Bad request")

    @api.exception_handler(UnreadablePostError)
    def body_cut_off(request, exc):
        # The web server stopped waiting for a body that stopped arriving (web_worker.py).
        return error(request, 400, UNREADABLE)

    @api.exception_handler(BadRequest)
    def bad_request_error(request, exc):
        return error(request, 400, str(exc) or "Bad request")

    # The last line of defence for numbers that no schema bounded: SQLite refuses integers
    # past 64 bits with OverflowError, PostgreSQL a value past its column with DataError.
    @api.exception_handler(OverflowError)
    @api.exception_handler(DataError)
    def out_of_range(request, exc):
        logger.warning("Out-of-range input to %s: %s", request.path, exc)
        return error(request, 422, "A value in the request is out of range")

    @api.exception_handler(Exception)
    def unexpected(request, exc):
        # What Django does with an uncaught exception (the test client re-raises it too),
        # answered in JSON and in every mode: DEBUG or not, no traceback goes to the client.
        signals.got_request_exception.send(sender=None, request=request)
        logger.error(
            "Internal Server Error: %s",
            request.path,
            exc_info=exc,
            extra={"status_code": 500, "request": request},
        )
        return error(request, 500, "Internal server error")


# Django's handlers (named in finetune_hub.urls)


def _api(request) -> bool:
    return request.path_info.startswith("/api/")


def bad_request(request, exception):
    if _api(request):
        return JsonResponse(error_body(400, "Bad request"), status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception):
    if _api(request):
        return JsonResponse(error_body(403, "Forbidden"), status=403)
    return defaults.permission_denied(request, exception)


def page_not_found(request, exception):
    if _api(request):
        return JsonResponse(error_body(404, "Not found"), status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if _api(request):
        return JsonResponse(error_body(500, "Internal server error"), status=500)
    return defaults.server_error(request)


# The OpenAPI document: every operation lists the errors it can answer, in the one shape.


class FieldErrorOut(Schema):
    # Left out of the body when unknown (never null): SkipJsonSchema keeps null out of the doc.
    line: int | SkipJsonSchema[None] = None
    field: str | SkipJsonSchema[None] = None
    message: str


class ErrorOut(Schema):
    """The one error shape: `code` says what kind of error it is, `detail` in words, and
    `errors` points at each bad field or line where there is one."""

    detail: str
    code: Code
    errors: list[FieldErrorOut] | SkipJsonSchema[None] = None


class UnavailableOut(Schema):
    """The 503 of DatabaseConnectionMiddleware, which answers before any route."""

    detail: str
    code: Literal["unavailable"] = "unavailable"


class PolicyRefusalOut(ErrorOut):
    """Marks, in a route's `response`, a status that may be a promotion policy's refusal
    (code policy_refused) as well as its status's own code."""


def errors(*statuses: int, policy: bool = False) -> dict[int, type[ErrorOut]]:
    """The errors a route answers beyond those of its shape (error_codes), for its
    `response={...}`: a conflict with a state, a role a read needs, a team named in a body;
    with policy=True, the promotion policy's refusals among them."""
    return {status: PolicyRefusalOut if policy else ErrorOut for status in statuses}


REASONS = {
    400: "Bad input (the field or line is named)",
    401: "No session or bearer token, or a revoked one",
    403: "The caller's role in the team, or the promotion policy, does not allow it",
    404: "No such object in the caller's teams",
    409: "Conflicts with the object's current state (a status, a policy, a race)",
    413: "The request body is over the size limit",
    422: "Input that fails validation, or a query parameter the operation does not declare "
    "(the field or line is named)",
    429: "The team's queue quota is full",
    503: "No database connection was free in time; retry",
}
UNSAFE = {"post", "put", "patch", "delete"}


def error_codes(method: str, operation: dict) -> set[int]:
    """The errors that any operation of this shape can answer, whatever its route does."""
    # 503: DatabaseConnectionMiddleware runs before every route. 422: ninja's validation of
    # each parameter and of the body, and on every operation a query parameter it does not
    # declare (finetune_hub.api.refuse_unknown_query).
    codes = {422, 503}
    if not operation.get("security"):
        return codes
    params = {p.get("in") for p in operation.get("parameters", [])}
    body = "requestBody" in operation
    codes.add(401)
    if "path" in params:
        codes.add(404)  # the object the path names, looked up among the caller's teams
    if body:
        codes |= {400, 413}  # a body that does not parse; one over the size limit
    if method in UNSAFE:
        codes.add(403)  # the role a write needs, and a session's CSRF check
    return codes


REF = "#/components/schemas/{model}"


def _content(status: int, policy: bool) -> dict:
    if status == 503:
        return {"application/json": {"schema": {"$ref": REF.format(model="UnavailableOut")}}}
    codes = [code_of(status)] + (["policy_refused"] if policy else [])
    schema = {
        "allOf": [{"$ref": REF.format(model="ErrorOut")}, {"properties": {"code": {"enum": codes}}}]
    }
    return {"application/json": {"schema": schema}}


def _components() -> dict:
    out = {}
    for model in (ErrorOut, UnavailableOut):
        schema = model.model_json_schema(ref_template=REF)
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


def _refusals(responses: dict) -> set[int]:
    """The statuses that a route declared with errors(policy=True)."""
    ref = REF.format(model=PolicyRefusalOut.__name__)
    return {
        int(status)
        for status, response in responses.items()
        if response.get("content", {}).get("application/json", {}).get("schema") == {"$ref": ref}
        and int(status) in POLICY_REFUSED_STATUSES
    }


def document(schema: dict) -> dict:
    """Adds to every operation of a generated OpenAPI document the errors of its shape, and
    gives those its route declares (errors()) their reason and their codes."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(_components())
    components.pop(PolicyRefusalOut.__name__, None)  # a marker: answered as ErrorOut
    for methods in schema.get("paths", {}).values():
        for method, operation in methods.items():
            responses = operation.setdefault("responses", {})
            declared = {int(c) for c in responses if int(c) >= 400}
            refusals = _refusals(responses)
            for code in sorted(error_codes(method, operation) | declared):
                content = _content(code, policy=code in refusals)
                responses[code] = {"description": REASONS[code], "content": content}
    return schema
