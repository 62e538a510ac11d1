from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from finetune_hub.errors import Conflict, full_clean, invalid
from finetune_hub.models import Membership, Role, Team
from finetune_hub.selectors import membership_require


@transaction.atomic
def team_create(*, name: str, by) -> Team:
    name = (name or "").strip()
    if not name:
        raise invalid("A team needs a name", field="name")
    team = Team(name=name)
    full_clean(team, validate_unique=False)
    try:
        with transaction.atomic():
            team.save()
    except IntegrityError:
        raise Conflict(f"A team named {name!r} exists already") from None
    Membership.objects.create(team=team, user=by, role=Role.ADMIN)
    return team


@transaction.atomic
def membership_set(*, team: Team, username: str, role: str, by) -> Membership:
    """Adds a user to a team or changes their role. Team admins only; users themselves are
    created by site admins (Django admin or createsuperuser), never with a default password."""
    membership_require(user=by, team=team, role=Role.ADMIN)
    if role not in Role.values:
        raise invalid(f"Unknown role {role!r}; one of {', '.join(Role.values)}", field="role")
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise invalid(f"No active user named {username!r}", field="username")
    if user == by and role != Role.ADMIN:
        admins = team.memberships.filter(role=Role.ADMIN).exclude(user=by)
        if not admins.exists():
            raise Conflict("A team keeps at least one admin")
    membership, _ = Membership.objects.update_or_create(
        team=team, user=user, defaults={"role": role}
    )
    return membership
