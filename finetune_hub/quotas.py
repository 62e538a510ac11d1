"""Per-team limits on queued work, so one team (or one script) cannot fill the queue that
every team's workers share. Checked by the services that queue work, whoever calls them:
the API, the dashboard, a comparison queueing its evaluations, scheduled retraining. Each
caller passes its own queued items (this module reads no app's tables)."""

from django.conf import settings
from django.db import transaction

from finetune_hub.errors import ServiceError
from finetune_hub.models import Team


class QuotaExceeded(ServiceError):
    def __init__(self, detail: str):
        super().__init__(detail=detail, status=429)


def _count(queued) -> int:
    """The items in the caller's query: a QuerySet's count, or what a count function returns."""
    return queued() if callable(queued) else queued.count()


LIMITS = {
    # kind: (setting, counter of the caller's queued items, what the message calls them)
    "runs": ("TEAM_MAX_QUEUED_RUNS", _count, "queued training runs"),
    "evaluations": ("TEAM_MAX_QUEUED_EVALUATIONS", _count, "queued evaluations"),
}


def queue_room_require(*, team: Team, kind: str, queued) -> None:
    """Refuses (429) one more queued item of `kind` when the team is at its limit. `queued`
    is the team's queued items of that kind: a QuerySet (or a function that counts them),
    counted here once the team is locked. Call it inside the transaction that queues the
    item: the team row stays locked until it commits, so two requests of one team count one
    after the other and cannot both take the last slot."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("queue_room_require must run inside the queueing transaction")
    setting, count, what = LIMITS[kind]
    limit = getattr(settings, setting)
    Team.objects.select_for_update().filter(pk=team.pk).first()
    if count(queued) >= limit:
        raise QuotaExceeded(
            f"Team {team.name} already has {limit} {what}, its limit "
            f"({setting}={limit}): wait for some to finish or cancel some"
        )
