import hashlib

from django.conf import settings
from django.db import models


class Role(models.TextChoices):
    # Ordered by what a role may do: each one can do everything the ones before it can.
    VIEWER = "viewer"
    MEMBER = "member"
    REVIEWER = "reviewer"
    APPROVER = "approver"
    ADMIN = "admin"

    @classmethod
    def rank(cls, role: str) -> int:
        return list(cls.values).index(role)


class Team(models.Model):
    # Not unique across the site: a global constraint would tell anyone who tries a name
    # that some other tenant uses it. Teams are addressed by id; a name is unique only among
    # the teams of the user who creates it (finetune_hub.services.team_create).
    name = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="teams"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Membership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)
    # The team /mlflow answers for when its URI names none and the token is bound to none
    # (finetune_hub.selectors.mlflow_team): a user in several teams chooses it.
    is_default = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="one_membership_per_user"),
            models.CheckConstraint(
                condition=models.Q(role__in=Role.values), name="membership_role_valid"
            ),
            models.UniqueConstraint(
                fields=["user"], condition=models.Q(is_default=True), name="one_default_team"
            ),
        ]

    def __str__(self):
        return f"{self.user} in {self.team} ({self.role})"

    def allows(self, role: str) -> bool:
        return Role.rank(self.role) >= Role.rank(role)


class Invitation(models.Model):
    """A team admin's offer of a role to a user. Nobody joins a team without consent: the
    membership exists once the invited user accepts (or a site admin adds them)."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="invitations")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="invitations"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="one_invitation_per_user"),
            models.CheckConstraint(
                condition=models.Q(role__in=Role.values), name="invitation_role_valid"
            ),
        ]

    def __str__(self):
        return f"{self.user} invited to {self.team} ({self.role})"


class ApiToken(models.Model):
    """A bearer token for scripts. Only its SHA-256 is stored: the tokens are 256 random
    bits, so a slow password hash would add nothing but latency to every request."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, help_text="The first characters, to recognise it")
    token_hash = models.CharField(max_length=64, unique=True)
    # Bound to one of the user's teams: /mlflow without /teams/<id> answers for it, whatever
    # teams the user joins later. Cleared when the user leaves the team.
    team = models.ForeignKey(
        Team, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()


class IdempotentRequest(models.Model):
    """The first answer to a creating request sent with an Idempotency-Key, kept 24 hours so
    a retried or double-submitted request gets it again instead of creating a second object
    (finetune_hub/idempotency.py). status is null while the first request is in progress."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of method, path and body")
    status = models.PositiveSmallIntegerField(null=True, blank=True)
    content_type = models.CharField(max_length=100, blank=True)
    body = models.BinaryField(blank=True, default=b"")
    location = models.CharField(max_length=2000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="one_answer_per_idempotency_key")
        ]

    def __str__(self):
        return f"{self.key} ({self.status or 'in progress'})"
