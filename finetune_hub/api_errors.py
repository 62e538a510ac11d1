"""Every error under /api/ in the one JSON shape, {"detail": ..., "errors": [...]}: ninja's
exception handlers for what a route raises, and Django's handler400/403/404/500 for what
never reaches a route (an unknown URL, a bad Host, a failure in a middleware). Elsewhere
Django's own pages answer. Bad input is a 4xx here whichever layer noticed it; only a bug is
a 500, logged as Django logs one, with no traceback in the answer."""

import logging

from django.core import signals
from django.core.exceptions import BadRequest, RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import DataError
from django.http import Http404, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.views import defaults
from ninja.errors import AuthenticationError, HttpError, ValidationError

from finetune_hub.errors import ServiceError
from finetune_hub.uploads import upload_refusal

logger = logging.getLogger("django.request")


def _body(detail: str, errors: list | None = None) -> dict:
    return {"detail": detail, **({"errors": errors} if errors else {})}


def _field(loc) -> str:
    # ninja locates a field as ("body", "payload", "name") or ("query", "page")
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "form", "file", "payload")]
    return ".".join(parts) or ".".join(map(str, loc))


def register(api) -> None:
    def error(request, status: int, detail: str, errors: list | None = None):
        return api.create_response(request, _body(detail, errors), status=status)

    @api.exception_handler(ServiceError)
    def service_error(request, exc: ServiceError):
        return api.create_response(request, exc.as_dict(), status=exc.status)

    @api.exception_handler(ValidationError)
    def validation_error(request, exc: ValidationError):
        # A file stopped for its size is missing from the request: say why, not "required".
        if refusal := upload_refusal(request):
            return service_error(request, refusal)
        errors = [
            {"field": _field(e.get("loc", ())), "message": e.get("msg", "Invalid")}
            for e in exc.errors
        ]
        return error(request, 422, "Invalid input", errors)

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
        return JsonResponse(_body("Bad request"), status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception):
    if _api(request):
        return JsonResponse(_body("Forbidden"), status=403)
    return defaults.permission_denied(request, exception)


def page_not_found(request, exception):
    if _api(request):
        return JsonResponse(_body("Not found"), status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if _api(request):
        return JsonResponse(_body("Internal server error"), status=500)
    return defaults.server_error(request)


# The OpenAPI document: every operation lists the errors it can answer, in the one shape.

ERROR_SCHEMA = {
    "title": "Error",
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["message"],
                "properties": {
                    "line": {"type": "integer"},
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        },
    },
}
REASONS = {
    400: "Bad input (the field or line is named)",
    401: "No session or bearer token, or a revoked one",
    403: "The caller's role in the team does not allow it",
    404: "No such object in the caller's teams",
    409: "Conflicts with the object's current state (a status, a policy, a race)",
    413: "The request body is over the size limit",
    422: "Input that fails validation (the field or line is named)",
    429: "The team's queue quota is full",
    503: "No database connection was free in time; retry",
}
# Routes that queue work count against the team's quota (finetune_hub.quotas).
QUOTA = {"responses": {429: {"description": REASONS[429]}}}
UNSAFE = {"post", "put", "patch", "delete"}


def error_codes(method: str, operation: dict) -> set[int]:
    """The errors an operation can answer, from its shape: who may call it, what it reads."""
    if not operation.get("security"):
        return set()
    params = {p.get("in") for p in operation.get("parameters", [])}
    codes = {401, 403, 503}
    if params or "requestBody" in operation:
        codes |= {400, 404, 422}
    if "path" in params:
        codes.add(404)
    if method in UNSAFE:
        codes |= {400, 409, 413}
    return codes


def document(schema: dict) -> dict:
    """Adds the error responses to every operation of a generated OpenAPI document."""
    schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for methods in schema.get("paths", {}).values():
        for method, operation in methods.items():
            responses = operation.setdefault("responses", {})
            codes = error_codes(method, operation) | {int(c) for c in responses if int(c) >= 400}
            for code in sorted(codes):
                responses[code] = {"description": REASONS[code], "content": content}
    return schema
