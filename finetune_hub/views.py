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
from finetune_hub.selectors import (
    invitations_for,
    invitations_of,
    members_of,
    membership_require,
    teams_for_user,
)
from finetune_hub.services import (
    default_team_set,
    invitation_accept,
    invitation_decline,
    invitation_withdraw,
    membership_leave,
    membership_notice,
    membership_set,
    team_create,
)


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
    team, is_admin = membership.team, membership.allows(Role.ADMIN)
    error = None
    if request.method == "POST":
        try:
            username, role = request.POST.get("username", ""), request.POST.get("role", Role.MEMBER)
            state = membership_set(team=team, username=username, role=role, by=request.user)
            messages.success(request, membership_notice(username=username, role=role, state=state))
            return redirect("team_detail", team_id=team_id)
        except ServiceError as exc:
            error = exc
    return render(
        request,
        "teams/detail.html",
        {
            "team": team,
            "membership": membership,
            "error": error,
            "members": paginate(request, members_of(team=team), param="members"),
            "invitations": invitations_of(team=team) if is_admin else [],
            "roles": Role.values,
            "is_admin": is_admin,
            "several_teams": teams_for_user(user=request.user).count() > 1,
            "datasets": paginate(request, datasets_for(user=request.user, team=team_id)),
        },
        status=error.status if error else 200,
    )


def acted(request, action, done: str, then):
    """A POST button's action: the service call; an object of another team (or another
    user's) is a plain 404 page, any other refusal the next page's error message."""
    try:
        action()
        messages.success(request, done)
    except NotFound as exc:
        raise Http404(exc.detail) from None
    except ServiceError as exc:
        messages.error(request, error_text(exc))
    return redirect(*then)


@require_http_methods(["POST"])
def team_leave(request, team_id: int):
    team = visible_or_404(membership_require, user=request.user, team=team_id).team
    done = f"You left {team.name}"
    redirect_to = ("home",)
    try:
        membership_leave(team=team, by=request.user)
    except ServiceError as exc:  # the last admin: stay on the team's page, with the reason
        messages.error(request, error_text(exc))
        redirect_to = ("team_detail", team_id)
    else:
        messages.success(request, done)
    return redirect(*redirect_to)


@require_http_methods(["POST"])
def team_default(request, team_id: int):
    return acted(
        request,
        lambda: default_team_set(team=team_id, by=request.user),
        "This is now your default team for /mlflow",
        ("team_detail", team_id),
    )


@require_http_methods(["POST"])
def team_invitation_withdraw(request, team_id: int, invitation_id: int):
    team = visible_or_404(membership_require, user=request.user, team=team_id).team
    return acted(
        request,
        lambda: invitation_withdraw(team=team, invitation_id=invitation_id, by=request.user),
        "Invitation withdrawn",
        ("team_detail", team_id),
    )


def invitations(request):
    return render(
        request, "teams/invitations.html", {"invitations": invitations_for(user=request.user)}
    )


@require_http_methods(["POST"])
def invitation_accept_view(request, invitation_id: int):
    return acted(
        request,
        lambda: invitation_accept(invitation_id=invitation_id, by=request.user),
        "Invitation accepted: you are now a member",
        ("invitations",),
    )


@require_http_methods(["POST"])
def invitation_decline_view(request, invitation_id: int):
    return acted(
        request,
        lambda: invitation_decline(invitation_id=invitation_id, by=request.user),
        "Invitation declined",
        ("invitations",),
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
        if "default_team" in request.POST:
            with service_errors_as_messages(request):
                team = team_of(request, request.POST["default_team"])
                default_team_set(team=team, by=request.user)
                messages.success(request, f"{team.name} is now your default team for /mlflow")
            return redirect("tokens")
        with service_errors_as_messages(request):
            team = request.POST.get("team")
            _, raw = auth.token_create(
                user=request.user,
                name=request.POST.get("name", "token"),
                team=team_of(request, team).pk if team else None,
            )
    memberships = request.user.memberships.select_related("team").order_by("team__name")
    return render(
        request,
        "tokens.html",
        {
            "tokens": request.user.api_tokens.select_related("team"),
            "raw": raw,
            "memberships": memberships,
            "default": next((m.team for m in memberships if m.is_default), None),
        },
    )


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
