"""One error type for every service, with an HTTP status, a machine-readable code and
line/field details, so the API and the dashboard render the same message (the MLflow
store's lesson: one type, a code)."""

from dataclasses import dataclass, field
from typing import Literal, get_args

# What a client can branch on, whatever the wording of the message.
Code = Literal[
    "invalid", "unauthenticated", "forbidden", "not_found", "conflict", "policy_refused", "quota"
]
CODES = set(get_args(Code))
# The code of an error that names none, from its status. A policy refusal names its own:
# it is a 409 (the version fails a rule) or a 403 (the policy rules the person out).
CODE_OF_STATUS: dict[int, Code] = {
    400: "invalid",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "invalid",
    422: "invalid",
    429: "quota",
}
POLICY_REFUSED_STATUSES = (403, 409)


def code_of(status: int) -> Code | None:
    """The code for a status: any other 4xx is bad input; a 5xx is not the client's to fix
    and has none."""
    return CODE_OF_STATUS.get(status, "invalid" if 400 <= status < 500 else None)


@dataclass
class FieldError:
    message: str
    field: str | None = None
    line: int | None = None

    def as_dict(self) -> dict:
        return {
            k: v
            for k, v in {"line": self.line, "field": self.field, "message": self.message}.items()
            if v is not None
        }


@dataclass
class ServiceError(Exception):
    detail: str
    status: int = 400
    errors: list[FieldError] = field(default_factory=list)
    code: Code | None = None  # left out: the status's (CODE_OF_STATUS)

    def __post_init__(self):
        self.code = self.code or code_of(self.status)

    def __str__(self):
        return self.detail

    def as_dict(self) -> dict:
        body = {"detail": self.detail}
        if self.code:
            body["code"] = self.code
        if self.errors:
            body["errors"] = [e.as_dict() for e in self.errors]
        return body


class NotFound(ServiceError):
    def __init__(self, what: str = "Not found"):
        super().__init__(detail=what, status=404)


class PermissionDenied(ServiceError):
    def __init__(self, detail: str):
        super().__init__(detail=detail, status=403)


class Conflict(ServiceError):
    def __init__(self, detail: str, errors: list[FieldError] | None = None):
        super().__init__(detail=detail, status=409, errors=errors or [])


class PolicyRefused(ServiceError):
    """A promotion that the model's promotion policy does not allow: 409 with each failed
    rule, or 403 for a rule about who may decide (the two-person rule)."""

    def __init__(self, detail: str, errors: list[FieldError] | None = None, status: int = 409):
        super().__init__(detail=detail, status=status, errors=errors or [], code="policy_refused")


def invalid(detail: str, *, field: str | None = None, status: int = 400) -> ServiceError:
    return ServiceError(
        detail=detail,
        status=status,
        errors=[FieldError(message=detail, field=field)] if field else [],
    )


# Where ninja says a request's field was: ("body", "payload", "name"), ("query", "page"),
# ("form", "seed"), ("file", "file"). "payload" is the name of every route's body parameter.
REQUEST_LOCATIONS = {"body", "query", "path", "form", "file", "header", "cookie"}
BODY_PARAMETER = "payload"


def from_pydantic(exc_or_errors, *, under: str = "") -> list[FieldError]:
    """Pydantic's errors as field errors that name the field's dotted path, e.g.
    "policy.thresholds.0.min" with under="policy". Takes pydantic's ValidationError, its
    .errors() list, or ninja's ValidationError (whose paths start with where in the request
    the field was: left out here, so the path is the field's as the client wrote it)."""
    errors = exc_or_errors
    request = not isinstance(errors, list) and isinstance(getattr(errors, "errors", None), list)
    if request:  # ninja's
        errors = errors.errors
    elif not isinstance(errors, list):  # pydantic's
        errors = errors.errors()
    return [
        FieldError(
            field=_path(e.get("loc", ()), under=under, request=request),
            message=e.get("msg", "Invalid").removeprefix("Value error, "),
        )
        for e in errors
    ]


def _path(loc, *, under: str, request: bool) -> str | None:
    parts = [str(p) for p in loc]
    if request and parts and parts[0] in REQUEST_LOCATIONS:
        parts = parts[1:]
        if len(parts) > 1 and parts[0] == BODY_PARAMETER:
            parts = parts[1:]
    return ".".join([under, *parts] if under else parts) or None


def full_clean(obj, **kwargs) -> None:
    """Model.full_clean, with Django's ValidationError turned into field errors (400)."""
    from django.core.exceptions import ValidationError

    try:
        obj.full_clean(**kwargs)
    except ValidationError as exc:
        errors = [
            FieldError(field=name, message=message)
            for name, messages in exc.message_dict.items()
            for message in messages
        ]
        raise ServiceError(detail=errors[0].message, status=400, errors=errors) from None
