from django.db.models import QuerySet

from finetune_hub.errors import NotFound, PermissionDenied
from finetune_hub.models import ApiToken, Invitation, Membership, Role, Team


def is_site_admin(user) -> bool:
    """Operators of the installation (workers, hosts, every team). is_staff alone is not
    enough: team members get it to use the annotation desk in the admin."""
    return bool(user and user.is_authenticated and user.is_superuser)


def teams_for_user(*, user) -> QuerySet[Team]:
    return Team.objects.filter(memberships__user=user).order_by("name")


def membership_require(*, user, team: Team | int, role: str = Role.VIEWER) -> Membership:
    """The caller's membership of `team` with at least `role`. Not a member: 404, so an
    outsider cannot even learn the team exists. A member with too small a role: 403."""
    team_id = team.pk if isinstance(team, Team) else team
    membership = (
        Membership.objects.select_related("team").filter(team_id=team_id, user=user).first()
        if user.is_authenticated
        else None
    )
    if membership is None:
        raise NotFound("Team not found")
    if not membership.allows(role):
        raise PermissionDenied(f"This needs the {role} role in team {membership.team.name}")
    return membership


def team_ids_of(user) -> QuerySet:
    """The ids of the user's teams, as a subquery."""
    return Membership.objects.filter(user=user).values("team_id")


def visible_to(queryset: QuerySet, *, user, team_path: str = "team") -> QuerySet:
    """Rows of `queryset` that belong to one of the user's teams: the one team-scoping rule
    of the project (API, pages, /mlflow and the admin desk). `team_path` leads from the row
    to its team ("experiment__team"; "pk" for teams themselves). A subquery on the
    memberships: no join, so nothing to deduplicate and counts stay right."""
    return queryset.filter(**{f"{team_path}__in": team_ids_of(user)})


def get_visible(queryset: QuerySet, *, user, team_path: str = "team", what: str, **lookup):
    obj = visible_to(queryset, user=user, team_path=team_path).filter(**lookup).first()
    if obj is None:
        raise NotFound(f"{what} not found")
    return obj


def members_of(*, team: Team) -> QuerySet[Membership]:
    return team.memberships.select_related("user").order_by("user__username")


def invitations_for(*, user) -> QuerySet[Invitation]:
    """The invitations addressed to the user, and only those."""
    return user.invitations.select_related("team", "invited_by").order_by("-created_at")


def invitations_of(*, team: Team) -> QuerySet[Invitation]:
    """A team's invitations not yet answered (for its admins)."""
    return team.invitations.select_related("user", "invited_by").order_by("user__username")


def mlflow_team(*, user, token: ApiToken | None = None) -> Team | None:
    """The team /mlflow answers for when its URI names none: the token's team, else the
    user's default team, else the user's only team; None when that leaves a choice (or no
    team). Joining another team changes none of the first two, so a running script's
    tracking URI keeps working."""
    memberships = Membership.objects.filter(user=user).select_related("team")
    if token is not None and token.team_id:
        bound = memberships.filter(team_id=token.team_id).first()
        if bound is not None:
            return bound.team
    if chosen := memberships.filter(is_default=True).first():
        return chosen.team
    only = list(memberships[:2])
    return only[0].team if len(only) == 1 else None
