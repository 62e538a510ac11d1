"""Uploaded files are bounded while they stream in, never after they have been read: a 600 MB
body used to be read whole before the size check.

CappedUploadHandler comes first in FILE_UPLOAD_HANDLERS, so it sees every file byte of every
multipart request before the memory and temporary-file handlers store it. Past
DATASET_MAX_UPLOAD_BYTES it stops the parse, and the rest of the body is never read. A body
whose Content-Length is already too large stops at its first file, before any file byte.
Form fields are bounded by Django's DATA_UPLOAD_MAX_MEMORY_SIZE.

Before any of that, BodyLimitMiddleware refuses a request whose Content-Length is over
its route's limit without reading a byte of it: a client that declares 1 GiB and sends six
bytes would otherwise hold a server thread waiting for the rest.

The parse stops with StopUpload rather than an exception, so the fields sent before the file
(the dashboard form's CSRF token) are still there and the page can answer with its form; the
refusal stays on the request, for the view or the API to answer 413."""

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpResponse, JsonResponse, UnreadablePostError

from finetune_hub.errors import FieldError, ServiceError


def too_large(limit: int) -> ServiceError:
    message = f"The file is larger than the upload limit; the limit is {limit:,} bytes"
    return ServiceError(
        detail=message, status=413, errors=[FieldError(field="file", message=message)]
    )


def upload_refusal(request) -> ServiceError | None:
    """The 413 to answer when this request's upload was stopped, else None."""
    return getattr(request, "_upload_refusal", None)


class CappedUploadHandler(FileUploadHandler):
    def __init__(self, request=None):
        super().__init__(request)
        self.limit = settings.DATASET_MAX_UPLOAD_BYTES
        self.received = 0  # file bytes of the whole request, over all its files
        self.declared_too_large = False

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        fields = settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0
        self.declared_too_large = content_length > self.limit + fields

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        if self.declared_too_large:
            self._stop()

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > self.limit:
            self._stop()
        return raw_data  # on to the handler that stores it

    def file_complete(self, file_size):
        return None

    def _stop(self):
        if self.request is not None:
            self.request._upload_refusal = too_large(self.limit)
        # connection_reset: the parser does not drain the rest of the body either.
        raise StopUpload(connection_reset=True)


def _dataset_limit() -> int:
    # The file, and the form fields sent beside it.
    return settings.DATASET_MAX_UPLOAD_BYTES + (settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0)


def _artifact_limit() -> int:
    return settings.ARTIFACT_MAX_UPLOAD_BYTES  # the raw body is the file


# The routes that take a file, by URL name, and the most bytes each one's body may declare.
# Every other route takes forms and JSON, bounded by DATA_UPLOAD_MAX_MEMORY_SIZE.
UPLOAD_LIMITS = {
    "api:upload_version": _dataset_limit,
    "version_upload": _dataset_limit,
    "api:upload_artifact": _artifact_limit,
    "mlflow_artifact": _artifact_limit,
}


def body_limit(view_name: str) -> int | None:
    """The most bytes a request body to this route may declare; None: no limit."""
    if limit := UPLOAD_LIMITS.get(view_name):
        return limit()
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def declared_length(request) -> int:
    try:
        return max(0, int(request.META.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0  # Django reads such a body as empty


UNREADABLE = "The request body did not arrive whole: the client stopped sending it"


class BodyLimitMiddleware:
    """Refuses with 413, before the body is read, a request whose Content-Length is over
    the limit of the route it resolved to (UPLOAD_LIMITS). It comes before the CSRF check,
    which reads a form; the limits are documented and the same for everyone, so it answers
    before authentication too.

    A body that stops arriving is cut off by the web server (gunicorn's worker,
    finetune_hub/web_worker.py); the view's read then fails, and the answer is a 400, not a
    500 logged as a bug."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        limit = body_limit(request.resolver_match.view_name)
        if limit is None or declared_length(request) <= limit:
            return None
        refusal = too_large(limit)
        if request.resolver_match.view_name not in UPLOAD_LIMITS:
            message = f"The request body is larger than the limit of {limit:,} bytes"
            refusal = ServiceError(detail=message, status=413)
        return self._answer(request, refusal)

    def process_exception(self, request, exception):
        if isinstance(exception, UnreadablePostError):
            return self._answer(request, ServiceError(detail=UNREADABLE, status=400))
        return None

    @staticmethod
    def _answer(request, refusal: ServiceError) -> HttpResponse:
        if request.path.startswith("/api/"):
            return JsonResponse(refusal.as_dict(), status=refusal.status)
        if request.path.startswith("/mlflow/"):
            # MLflow's error shape (experiments/mlflow/protocol.py), which its client reads.
            body = {"error_code": "INVALID_PARAMETER_VALUE", "message": refusal.detail}
            return JsonResponse(body, status=refusal.status)
        return HttpResponse(refusal.detail, status=refusal.status, content_type="text/plain")
