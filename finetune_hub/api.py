"""The root NinjaAPI: authentication, the one error shape, and the teams/tokens routes."""

import inspect
from functools import wraps
from typing import Literal

from django.http import Http404, JsonResponse
from ninja import Field, NinjaAPI, Router, Schema, Status
from ninja.errors import ConfigError
from ninja.operation import Operation

from finetune_hub import api_errors, idempotency
from finetune_hub.auth import api_auth, bearer_token, bearer_user, token_create, token_revoke
from finetune_hub.bounds import BoundedJSONParser, Id
from finetune_hub.errors import FieldError, ServiceError
from finetune_hub.models import ApiToken, Membership, Role
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


def authenticated_docs(view):
    """The schema and docs pages answer only a session or a bearer token, like every
    endpoint but /api/health."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        user = bearer_user(request) if bearer_token(request) else request.user
        if user is None or not user.is_authenticated:
            return JsonResponse(api_errors.error_body(401, "Authentication required"), status=401)
        return view(request, *args, **kwargs)

    return wrapped


# Operation ids name a generated client's methods, so they are part of the contract. ninja
# derives them from the view's module; the routes that moved into experiments/api.py when
# experiments got its front door keep the ids they were published under.
PUBLISHED_MODULE = {"experiments.api": "experiments.training.api"}
PUBLISHED_TRACKED = {
    "start_tracked_run",
    "upload_artifact",
    "end_run",
    "log_points",
    "set_notes",
    "log_params",
    "set_tags",
}


class HubAPI(NinjaAPI):
    def get_openapi_operation_id(self, operation: Operation) -> str:
        module, name = operation.view_func.__module__, operation.view_func.__name__
        if module == "experiments.api" and name in PUBLISHED_TRACKED:
            module = "experiments.tracked_api"
        return f"{PUBLISHED_MODULE.get(module, module)}_{name}".replace(".", "_")

    def get_openapi_schema(self, *args, **kwargs):
        # ninja documents what a route returns; the errors come from the handlers, so they
        # are added here, for every operation, from its shape (finetune_hub.api_errors).
        schema = api_errors.document(super().get_openapi_schema(*args, **kwargs))
        return idempotency.document(schema)


api = HubAPI(
    title="finetune_hub",
    version="1",
    auth=api_auth,
    urls_namespace="api",
    docs_decorator=authenticated_docs,
    parser=BoundedJSONParser(),
)


api_errors.register(api)


def query_names(operation: Operation) -> set[str]:
    """The query parameters an operation declares, as a client writes them: a parameter's
    alias (`Query(None, alias="keys")`) and each field of a flattened schema (`paging:
    Query[PageIn]` declares page and limit). ninja groups them in one model per source."""
    return {
        name
        for model in operation.models
        if model.__ninja_param_source__ == "query"
        for name in model.__ninja_flatten_map__
    }


def unknown_query(unknown: list[str], accepted: set[str]) -> ServiceError:
    takes = (
        f"it takes {', '.join(sorted(accepted))}" if accepted else "it takes no query parameters"
    )
    plural = "s" if len(unknown) > 1 else ""
    return ServiceError(
        detail=f"Unknown query parameter{plural} {', '.join(unknown)}: {takes}",
        status=422,
        errors=[
            FieldError(field=name, message=f"Unknown query parameter: {takes}") for name in unknown
        ],
    )


def refuse_unknown_query(run):
    """A query parameter that the operation does not declare is a 422 naming it, not silently
    ignored (?metric_keys=loss for ?keys=loss answered every metric). Applied by ninja to each
    operation's run (api.add_decorator, mode "view"); the check itself comes after the
    operation's authentication and throttling, as ninja's validation of its parameters does,
    so a caller who is not signed in learns nothing of them. The schema and docs pages are
    not operations, and are left alone."""
    operation = getattr(inspect.unwrap(run), "__self__", None)
    if not isinstance(operation, Operation) or operation.is_async:
        raise ConfigError(f"refuse_unknown_query: not a sync operation's run: {run!r}")
    accepted = query_names(operation)

    @wraps(run)
    def checked(request, *args, **kwargs):
        unknown = sorted(set(request.GET) - accepted)
        if not unknown:
            return run(request, *args, **kwargs)
        refused = operation._run_checks(request)  # authentication and throttling first
        return refused or operation.api.on_exception(request, unknown_query(unknown, accepted))

    return checked


api.add_decorator(refuse_unknown_query, mode="view")


class HealthOut(Schema):
    status: str


@api.get("/health", auth=None, tags=["health"], response=HealthOut)
def health(request):
    return {"status": "ok"}


teams = Router(tags=["teams"])


class TeamIn(Schema):
    name: str


class TeamOut(Schema):
    id: int
    name: str
    role: str | None = None
    default: bool = Field(False, description="the team /mlflow answers for when its URI names none")


class MemberIn(Schema):
    username: str
    role: str = Role.MEMBER


class MemberOut(Schema):
    username: str
    role: str


class MemberSetOut(MemberOut):
    state: Literal["member", "invited"] = Field(
        description="member: the user's role changed (or a site admin added them); invited: "
        "the user, if such an active account exists, is invited and joins on accepting"
    )
    detail: str


class TeamInvitationOut(Schema):
    id: int
    username: str
    role: str
    invited_by: str | None = None
    created_at: str


class InvitationOut(Schema):
    id: int
    team: int
    team_name: str
    role: str
    invited_by: str | None = None
    created_at: str


def _team_out(membership: Membership) -> dict:
    team = membership.team
    return {
        "id": team.pk,
        "name": team.name,
        "role": membership.role,
        "default": membership.is_default,
    }


@teams.post("", response={201: TeamOut, **api_errors.errors(409)})
def create_team(request, payload: TeamIn):
    team = team_create(name=payload.name, by=request.auth)
    return Status(201, {"id": team.pk, "name": team.name, "role": Role.ADMIN})


@teams.get("", response=list[TeamOut])
def list_teams(request):
    memberships = {m.team_id: m for m in request.auth.memberships.select_related("team")}
    return [_team_out(memberships[t.pk]) for t in teams_for_user(user=request.auth)]


@teams.post("/{team_id}/members", response={201: MemberSetOut, **api_errors.errors(409)})
def add_member(request, team_id: Id, payload: MemberIn):
    """Invites a user to the team with a role (team admins); the user joins when they accept
    (POST /api/invitations/{id}/accept). A member's role changes at once, and a site admin's
    addition is a membership at once (state "member"). The same answer whether or not the
    username exists (no user enumeration)."""
    team = membership_require(user=request.auth, team=team_id).team
    state = membership_set(team=team, username=payload.username, role=payload.role, by=request.auth)
    notice = membership_notice(username=payload.username, role=payload.role, state=state)
    return Status(
        201, {"username": payload.username, "role": payload.role, "state": state, "detail": notice}
    )


@teams.get("/{team_id}/members", response=list[MemberOut])
def list_members(request, team_id: Id):
    team = membership_require(user=request.auth, team=team_id).team
    return [{"username": m.user.username, "role": m.role} for m in members_of(team=team)]


@teams.get(
    "/{team_id}/invitations", response={200: list[TeamInvitationOut], **api_errors.errors(403)}
)
def list_team_invitations(request, team_id: Id):
    """The team's invitations not yet answered (team admins)."""
    team = membership_require(user=request.auth, team=team_id, role=Role.ADMIN).team
    return [
        {
            "id": i.pk,
            "username": i.user.username,
            "role": i.role,
            "invited_by": i.invited_by.username if i.invited_by else None,
            "created_at": i.created_at.isoformat(),
        }
        for i in invitations_of(team=team)
    ]


@teams.delete("/{team_id}/invitations/{invitation_id}", response={204: None})
def withdraw_invitation(request, team_id: Id, invitation_id: Id):
    """Takes back an invitation not yet answered (team admins)."""
    team = membership_require(user=request.auth, team=team_id).team
    invitation_withdraw(team=team, invitation_id=invitation_id, by=request.auth)
    return Status(204, None)


@teams.post("/{team_id}/leave", response={204: None, **api_errors.errors(409)})
def leave_team(request, team_id: Id):
    """The caller leaves the team (409 for its last admin)."""
    team = membership_require(user=request.auth, team=team_id).team
    membership_leave(team=team, by=request.auth)
    return Status(204, None)


@teams.put("/{team_id}/default", response=TeamOut)
def set_default_team(request, team_id: Id):
    """Makes the team the caller's default: /mlflow without /teams/<id> answers for it
    (unless the token is bound to a team)."""
    return _team_out(default_team_set(team=team_id, by=request.auth))


invitations = Router(tags=["teams"])


@invitations.get("", response=list[InvitationOut])
def list_invitations(request):
    """The invitations addressed to the caller."""
    return [
        {
            "id": i.pk,
            "team": i.team_id,
            "team_name": i.team.name,
            "role": i.role,
            "invited_by": i.invited_by.username if i.invited_by else None,
            "created_at": i.created_at.isoformat(),
        }
        for i in invitations_for(user=request.auth)
    ]


@invitations.post("/{invitation_id}/accept", response=TeamOut)
def accept_invitation(request, invitation_id: Id):
    """Joins the team with the invited role."""
    return _team_out(invitation_accept(invitation_id=invitation_id, by=request.auth))


@invitations.post("/{invitation_id}/decline", response={204: None})
def decline_invitation(request, invitation_id: Id):
    invitation_decline(invitation_id=invitation_id, by=request.auth)
    return Status(204, None)


tokens = Router(tags=["tokens"])


class TokenIn(Schema):
    name: str
    team: Id | None = Field(
        None, description="one of your teams: /mlflow without /teams/<id> answers for it"
    )


class TokenOut(Schema):
    id: int
    name: str
    prefix: str
    created_at: str
    last_used_at: str | None = None
    team: int | None = None


class TokenCreatedOut(TokenOut):
    token: str = Field(description="shown once; only its hash is stored")


def _token_out(token: ApiToken) -> dict:
    return {
        "id": token.pk,
        "name": token.name,
        "prefix": token.prefix,
        "created_at": token.created_at.isoformat(),
        "last_used_at": token.last_used_at.isoformat() if token.last_used_at else None,
        "team": token.team_id,
    }


@tokens.post("", response={201: TokenCreatedOut, **api_errors.errors(404)})
def create_token(request, payload: TokenIn):
    token, raw = token_create(user=request.auth, name=payload.name, team=payload.team)
    return Status(201, {**_token_out(token), "token": raw})


@tokens.get("", response=list[TokenOut])
def list_tokens(request):
    return [_token_out(t) for t in request.auth.api_tokens.all()]


@tokens.delete("/{token_id}", response={204: None})
def revoke_token(request, token_id: Id):
    if not token_revoke(user=request.auth, token_id=token_id):
        raise Http404
    return Status(204, None)


api.add_router("/teams", teams)
api.add_router("/invitations", invitations)
api.add_router("/tokens", tokens)

from datasets_app.api import router as datasets_router  # noqa: E402
from evaluation.api import router as evaluation_router  # noqa: E402
from experiments.api import router as training_router  # noqa: E402
from registry.api import router as registry_router  # noqa: E402

api.add_router("/", datasets_router)
api.add_router("/", training_router)
api.add_router("/", evaluation_router)
api.add_router("/", registry_router)
