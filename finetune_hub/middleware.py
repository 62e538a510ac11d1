import logging

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.db import DatabaseError, connection
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render

from finetune_hub.errors import ServiceError

logger = logging.getLogger(__name__)

# The APIs answer 401 themselves; the login page, admin and static files handle their own
# access.
API_PREFIXES = ("/api/", "/mlflow/")
OPEN_PREFIXES = (
    *API_PREFIXES,
    "/accounts/login/",
    "/admin/",
    "/" + settings.STATIC_URL.lstrip("/"),
)


class LoginRequiredMiddleware:
    """Every dashboard page needs a login; a new page cannot forget it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.user.is_authenticated and not request.path.startswith(OPEN_PREFIXES):
            return redirect_to_login(request.get_full_path())
        return self.get_response(request)


class ServiceErrorPageMiddleware:
    """A ServiceError a dashboard page did not handle itself (a query string's id, page or
    number out of range: finetune_hub.bounds) is the page of its 4xx naming the field, not a
    500. The APIs answer their own errors in their own shapes."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exc):
        if not isinstance(exc, ServiceError) or request.path.startswith(API_PREFIXES):
            return None
        return render(request, "client_error.html", {"error": exc}, status=exc.status)


class DatabaseConnectionMiddleware:
    """Takes the request's database connection before anything else runs. When the pool has
    none free within DB_POOL_TIMEOUT (or the database refuses one) the answer is 503 with
    Retry-After, JSON under /api, instead of a 500 from whichever query happened to be first
    (the session, the token, the view)."""

    RETRY_AFTER_S = "5"

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            connection.ensure_connection()
        except DatabaseError as exc:
            logger.warning("No database connection for %s: %s", request.path, exc)
            return self.unavailable(request)
        return self.get_response(request)

    def unavailable(self, request):
        detail = "The database is busy or unavailable; try again shortly"
        if request.path.startswith(API_PREFIXES):
            response = JsonResponse({"detail": detail, "code": "unavailable"}, status=503)
        else:
            response = HttpResponse(detail, status=503, content_type="text/plain")
        response["Retry-After"] = self.RETRY_AFTER_S
        return response
