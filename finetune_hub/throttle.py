"""Login throttling, by django-axes (settings.AXES_*): what a locked-out caller is told, and
which address a login comes from.

Axes counts each failed login for its username and for its address; past
AXES_FAILURE_LIMIT either is locked out of every login form (the site's and the admin's,
both Django's authenticate) until AXES_COOLOFF_TIME has passed since its last attempt, the
right password included. A username that no account has is counted the same way, and the
lockout page is the same, so it tells nobody whether the account exists."""

from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.shortcuts import render


def lockout_text() -> str:
    minutes = max(1, round(settings.AXES_COOLOFF_TIME.total_seconds() / 60))
    plural = "s" if minutes != 1 else ""
    return f"Too many failed login attempts: try again in {minutes} minute{plural}."


def lockout_response(request, original_response=None, credentials=None):
    """The login page again, with the lockout message and no form errors, as 429."""
    context = {
        "form": AuthenticationForm(request),
        "locked_out": lockout_text(),
        "next": request.POST.get("next", "") or request.GET.get("next", ""),
    }
    response = render(request, "registration/login.html", context, status=429)
    response["Retry-After"] = str(int(settings.AXES_COOLOFF_TIME.total_seconds()))
    return response


def client_address(request) -> str | None:
    """The client's address: REMOTE_ADDR, or behind FORWARDED_PROXY_COUNT proxies that each
    append the address they were reached from to X-Forwarded-For, the entry that many places
    from the right (what a client writes further left is its own claim, and not believed)."""
    proxies = settings.FORWARDED_PROXY_COUNT
    forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [a for a in forwarded if a]
    if proxies > 0 and len(forwarded) >= proxies:
        return forwarded[-proxies]
    return request.META.get("REMOTE_ADDR")
