import secrets
from datetime import timedelta

from django.utils import timezone
from ninja.security import HttpBearer, SessionAuth

from finetune_hub.models import ApiToken
from finetune_hub.selectors import membership_require

TOKEN_PREFIX = "fth_"


def token_create(*, user, name: str, team: int | None = None) -> tuple[ApiToken, str]:
    """Returns the row and the raw token, which is shown once and never stored. `team`, one
    of the user's teams, binds the token to it for /mlflow (selectors.mlflow_team)."""
    team_id = membership_require(user=user, team=team).team_id if team is not None else None
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        name=name[:100] or "token",
        prefix=raw[:12],
        token_hash=ApiToken.hash(raw),
        team_id=team_id,
    )
    return token, raw


def token_revoke(*, user, token_id: int) -> bool:
    """Deletes one of the user's tokens; False when the user has no such token."""
    deleted, _ = user.api_tokens.filter(pk=token_id).delete()
    return bool(deleted)


def token_get(raw: str) -> ApiToken | None:
    """The token row of an active user (with its user), marked used; None for any other."""
    token = (
        ApiToken.objects.select_related("user")
        .filter(token_hash=ApiToken.hash(raw), user__is_active=True)
        .first()
    )
    if token is None:
        return None
    now = timezone.now()
    # Writing on every request would serialise API traffic on SQLite; once a minute is plenty.
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


def token_user(raw: str):
    token = token_get(raw)
    return token.user if token else None


def bearer_token(request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, the scheme in any case (RFC
    7235), or None. The one place the header is read: the API, /mlflow, the docs pages and
    the idempotency middleware all ask here."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def bearer_user(request):
    """The active user of the request's bearer token, or None."""
    token = bearer_token(request)
    return token_user(token) if token else None


def bearer_api_token(request) -> ApiToken | None:
    """The stored token of the request's bearer header (its user active), or None."""
    token = bearer_token(request)
    return token_get(token) if token else None


class BearerAuth(HttpBearer):
    def __call__(self, request):
        token = bearer_token(request)
        return self.authenticate(request, token) if token else None

    def authenticate(self, request, token):
        user = token_user(token)
        if user is not None:
            request.user = user
        return user


class BrowserSessionAuth(SessionAuth):
    """Django's session with the CSRF check on unsafe methods (ninja's SessionAuth).

    The CSRF check protects a logged-in session, so it is made only for one. ninja checks it
    first, which answered a write with no credentials, or with a bad or revoked token,
    403 "CSRF check failed" where the answer is 401; and it parsed the body of a caller
    nobody had authenticated."""

    def _get_key(self, request):
        if not request.user.is_authenticated:
            return None
        return super()._get_key(request)


# Bearer first: a script that sends a token is never refused over a stale session cookie.
api_auth = [BearerAuth(), BrowserSessionAuth(csrf=True)]
