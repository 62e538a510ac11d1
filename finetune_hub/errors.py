"""One error type for every service, with an HTTP status and line/field details, so the
API and the dashboard render the same message (the MLflow store's lesson: one type, a code)."""

from dataclasses import dataclass, field


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

    def __str__(self):
        return self.detail

    def as_dict(self) -> dict:
        body = {"detail": self.detail}
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


def invalid(detail: str, *, field: str | None = None, status: int = 400) -> ServiceError:
    return ServiceError(
        detail=detail,
        status=status,
        errors=[FieldError(message=detail, field=field)] if field else [],
    )


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
