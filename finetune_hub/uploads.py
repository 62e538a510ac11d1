"""Uploaded files are bounded while they stream in, never after they have been read: a 600 MB
body used to be read whole before the size check.

CappedUploadHandler comes first in FILE_UPLOAD_HANDLERS, so it sees every file byte of every
multipart request before the memory and temporary-file handlers store it. Past
DATASET_MAX_UPLOAD_BYTES it stops the parse, and the rest of the body is never read. A body
whose Content-Length is already too large stops at its first file, before any file byte.
Form fields are bounded by Django's DATA_UPLOAD_MAX_MEMORY_SIZE.

The parse stops with StopUpload rather than an exception, so the fields sent before the file
(the dashboard form's CSRF token) are still there and the page can answer with its form; the
refusal stays on the request, for the view or the API to answer 413."""

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload

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
