from django.conf import settings
from django.contrib.auth.views import redirect_to_login

# The API answers 401 itself; the login page, admin and static files handle their own access.
OPEN_PREFIXES = ("/api/", "/accounts/login/", "/admin/", "/" + settings.STATIC_URL.lstrip("/"))


class LoginRequiredMiddleware:
    """Every dashboard page needs a login; a new page cannot forget it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.user.is_authenticated and not request.path.startswith(OPEN_PREFIXES):
            return redirect_to_login(request.get_full_path())
        return self.get_response(request)
