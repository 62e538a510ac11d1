from contextlib import contextmanager

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from datasets_app.selectors import datasets_for
from finetune_hub import auth
from finetune_hub.bounds import as_int, shown
from finetune_hub.errors import NotFound, ServiceError, invalid
from finetune_hub.models import Role, Team
from finetune_hub.pagination import paginate
from finetune_hub.selectors import members_of, membership_require, teams_for_user
from finetune_hub.services import membership_notice, membership_set, team_create


@contextmanager
def service_errors_as_messages(request):
    """A ServiceError in the block becomes the page's error message (the caller then shows
    the page again); any other exception is a bug and propagates."""
    try:
        yield
    except ServiceError as exc:
        messages.error(request, error_text(exc))


def error_text(exc: ServiceError, most: int = 10) -> str:
    """The error's detail and what each of its field errors says (a policy's bad fields, a
    form's), as one message."""
    parts = [
        f"{e.field}: {e.message}" if e.field else e.message
        for e in exc.errors
        if e.message != exc.detail
    ]
    more = f" (and {len(parts) - most} more)" if len(parts) > most else ""
    return exc.detail + (" — " + "; ".join(parts[:most]) + more if parts else "")


def team_of(request, value) -> Team:
    """One of the user's teams, from a form's team field."""
    team = next((t for t in teams_for_user(user=request.user) if str(t.pk) == str(value)), None)
    if team is None:
        raise invalid("Choose one of your teams", field="team")
    return team


def visible_or_404(fn, **kwargs):
    """Runs a selector; an object of another team is a plain 404 page."""
    try:
        return fn(**kwargs)
    except NotFound as exc:
        raise Http404(exc.detail) from None


def home(request):
    from experiments.selectors import queue_for
    from registry.selectors import models_for_page

    return render(
        request,
        "home.html",
        {
            "teams": teams_for_user(user=request.user),
            "datasets": datasets_for(user=request.user)[:20],
            "active_runs": queue_for(user=request.user)[:20],
            "models": models_for_page(user=request.user)[:20],
        },
    )


@require_http_methods(["GET", "POST"])
def team_new(request):
    if request.method == "POST":
        try:
            team = team_create(name=request.POST.get("name", ""), by=request.user)
        except ServiceError as exc:
            return render(request, "teams/new.html", {"error": exc}, status=exc.status)
        return redirect("team_detail", team_id=team.pk)
    return render(request, "teams/new.html")


@require_http_methods(["GET", "POST"])
def team_detail(request, team_id: int):
    membership = visible_or_404(membership_require, user=request.user, team=team_id)
    error = None
    if request.method == "POST":
        try:
            username, role = request.POST.get("username", ""), request.POST.get("role", Role.MEMBER)
            membership_set(team=membership.team, username=username, role=role, by=request.user)
            messages.success(request, membership_notice(username=username, role=role))
            return redirect("team_detail", team_id=team_id)
        except ServiceError as exc:
            error = exc
    return render(
        request,
        "teams/detail.html",
        {
            "team": membership.team,
            "membership": membership,
            "error": error,
            "members": paginate(request, members_of(team=membership.team), param="members"),
            "roles": Role.values,
            "is_admin": membership.allows(Role.ADMIN),
            "datasets": paginate(request, datasets_for(user=request.user, team=team_id)),
        },
        status=error.status if error else 200,
    )


@require_http_methods(["GET", "POST"])
def tokens(request):
    raw = None
    if request.method == "POST":
        if "revoke" in request.POST:
            with service_errors_as_messages(request):
                token_id = form_int(request.POST, "revoke", 0)
                if auth.token_revoke(user=request.user, token_id=token_id):
                    messages.success(request, "Token revoked")
            return redirect("tokens")
        _, raw = auth.token_create(user=request.user, name=request.POST.get("name", "token"))
    return render(request, "tokens.html", {"tokens": request.user.api_tokens.all(), "raw": raw})


def form_int(data, name: str, default: int) -> int:
    """An integer form or query field (finetune_hub.bounds: ASCII digits, int64), or a 400
    that names the field."""
    raw = (data.get(name) or "").strip()
    if not raw:
        return default
    try:
        return as_int(raw)
    except ValueError as exc:
        problem = f"{name} must be a whole number ({exc}), not {shown(raw)}"
        raise invalid(problem, field=name, status=400) from None
