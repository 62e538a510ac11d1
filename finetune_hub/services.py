from django.contrib.auth import get_user_model
from django.db import transaction

from finetune_hub.errors import Conflict, full_clean, invalid
from finetune_hub.models import Membership, Role, Team
from finetune_hub.selectors import membership_require


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


def membership_notice(*, username: str, role: str) -> str:
    """The one answer to adding a member, whether or not the account exists: a team admin
    must not be able to enumerate the site's usernames by adding them."""
    return f"If an active account named {username!r} exists, it now has the role {role}."


@transaction.atomic
def membership_set(*, team: Team, username: str, role: str, by) -> Membership | None:
    """Adds a user to a team or changes their role; None (and no error) when no active
    account has that username. Team admins only; users themselves are created by site
    admins (Django admin or createsuperuser), never with a default password."""
    membership_require(user=by, team=team, role=Role.ADMIN)
    if role not in Role.values:
        raise invalid(f"Unknown role {role!r}; one of {', '.join(Role.values)}", field="role")
    if not (username or "").strip():
        raise invalid("Give a username", field="username")
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        return None
    if user == by and role != Role.ADMIN:
        admins = team.memberships.filter(role=Role.ADMIN).exclude(user=by)
        if not admins.exists():
            raise Conflict("A team keeps at least one admin")
    membership, _ = Membership.objects.update_or_create(
        team=team, user=user, defaults={"role": role}
    )
    return membership
