from django.contrib.auth import get_user_model
from django.db import transaction

from finetune_hub.errors import Conflict, NotFound, full_clean, invalid
from finetune_hub.models import ApiToken, Invitation, Membership, Role, Team
from finetune_hub.selectors import is_site_admin, membership_require


@transaction.atomic
def team_create(*, name: str, by) -> Team:
    """A name is refused only when one of the caller's own teams has it: whether another
    tenant uses a name is not the caller's business (nor something to probe)."""
    name = (name or "").strip()
    if not name:
        raise invalid("A team needs a name", field="name")
    team = Team(name=name)
    full_clean(team, validate_unique=False)
    # The caller's row is the lock: two concurrent requests of one user check one by one.
    get_user_model().objects.select_for_update().filter(pk=by.pk).first()
    if Team.objects.filter(memberships__user=by, name__iexact=name).exists():
        raise Conflict(f"You are already in a team named {name!r}")
    team.save()
    Membership.objects.create(team=team, user=by, role=Role.ADMIN)
    return team


def membership_notice(*, username: str, role: str, state: str) -> str:
    """The one answer to adding a member, whether or not the account exists: a team admin
    must not be able to enumerate the site's usernames by inviting them."""
    if state == "member":
        return f"{username} now has the role {role}."
    return (
        f"If an active account named {username!r} exists, it is invited with the role {role}; "
        "it joins the team when it accepts."
    )


def _active_user(username: str):
    return get_user_model().objects.filter(username=username, is_active=True).first()


@transaction.atomic
def membership_set(*, team: Team, username: str, role: str, by) -> str:
    """A team admin's "add this user": a member's role changes at once; anyone else is only
    invited, and joins when they accept (invitation_accept), so nobody is put in a team, and
    in its lists and its /mlflow, without consent. A site admin adds the user directly.

    Returns "member" or "invited". A username no active account has is "invited" too (and
    nothing is stored), so the answer tells a team admin nothing about the site's accounts;
    a site admin, who sees them all anyway, is told."""
    membership_require(user=by, team=team, role=Role.ADMIN)
    if role not in Role.values:
        raise invalid(f"Unknown role {role!r}; one of {', '.join(Role.values)}", field="role")
    if not (username or "").strip():
        raise invalid("Give a username", field="username")
    user = _active_user(username)
    membership = team.memberships.filter(user=user).first() if user else None
    if membership is not None:
        if user == by and role != Role.ADMIN:
            _another_admin_require(team, by, "A team keeps at least one admin")
        membership.role = role
        membership.save(update_fields=["role"])
        return "member"
    if is_site_admin(by):
        if user is None:
            raise invalid(f"No active account is named {username!r}", field="username")
        Membership.objects.create(team=team, user=user, role=role)
        Invitation.objects.filter(team=team, user=user).delete()
        return "member"
    if user is not None:
        Invitation.objects.update_or_create(
            team=team, user=user, defaults={"role": role, "invited_by": by}
        )
    return "invited"


def _another_admin_require(team: Team, user, message: str) -> None:
    # The team's admin rows, locked: two admins leaving at once cannot both pass the check.
    admins = list(
        team.memberships.select_for_update().filter(role=Role.ADMIN).values_list("user_id")
    )
    if not [a for (a,) in admins if a != user.pk]:
        raise Conflict(message)


def _own_invitation(*, invitation_id: int, by) -> Invitation:
    """One of the caller's own invitations; anyone else's is not found."""
    invitation = (
        Invitation.objects.select_for_update().filter(pk=invitation_id, user=by).first()
        if by.is_authenticated
        else None
    )
    if invitation is None:
        raise NotFound("Invitation not found")
    return invitation


@transaction.atomic
def invitation_accept(*, invitation_id: int, by) -> Membership:
    """The invited user joins the team with the invited role."""
    invitation = _own_invitation(invitation_id=invitation_id, by=by)
    membership, _ = Membership.objects.get_or_create(
        team_id=invitation.team_id, user=by, defaults={"role": invitation.role}
    )
    invitation.delete()
    return membership


@transaction.atomic
def invitation_decline(*, invitation_id: int, by) -> None:
    _own_invitation(invitation_id=invitation_id, by=by).delete()


@transaction.atomic
def invitation_withdraw(*, team: Team, invitation_id: int, by) -> None:
    """A team admin takes back an invitation not yet answered."""
    membership_require(user=by, team=team, role=Role.ADMIN)
    deleted, _ = team.invitations.filter(pk=invitation_id).delete()
    if not deleted:
        raise NotFound("Invitation not found")


@transaction.atomic
def membership_leave(*, team: Team, by) -> None:
    """The caller leaves the team; its last admin cannot (409), or nobody could manage it.
    Tokens bound to the team lose the binding: /mlflow no longer answers for it."""
    membership = membership_require(user=by, team=team)
    if membership.role == Role.ADMIN:
        _another_admin_require(
            team, by, "You are this team's last admin: make another member admin first"
        )
    membership.delete()
    ApiToken.objects.filter(user=by, team=team).update(team=None)


@transaction.atomic
def default_team_set(*, team: Team | int, by) -> Membership:
    """The team /mlflow answers for when its URI names none (and the token no team)."""
    membership = membership_require(user=by, team=team)
    by.memberships.exclude(pk=membership.pk).filter(is_default=True).update(is_default=False)
    membership.is_default = True
    membership.save(update_fields=["is_default"])
    return membership
