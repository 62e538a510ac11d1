"""Per-team limits on queued work, so one team (or one script) cannot fill the queue that
every team's workers share. Checked by the services that queue work, whoever calls them:
the API, the dashboard, a comparison queueing its evaluations, scheduled retraining."""

from django.conf import settings
from django.db import transaction

from finetune_hub.errors import ServiceError
from finetune_hub.models import Team


class QuotaExceeded(ServiceError):
    def __init__(self, detail: str):
        super().__init__(detail=detail, status=429)


def _queued_runs(team: Team) -> int:
    from experiments.models import TrainingRun

    return TrainingRun.objects.filter(
        experiment__team=team, status=TrainingRun.Status.QUEUED
    ).count()


def _queued_evaluations(team: Team) -> int:
    from evaluation.models import EvaluationRun

    return EvaluationRun.objects.filter(team=team, status=EvaluationRun.Status.QUEUED).count()


LIMITS = {
    # kind: (setting, counter, what the message calls it)
    "runs": ("TEAM_MAX_QUEUED_RUNS", _queued_runs, "queued training runs"),
    "evaluations": ("TEAM_MAX_QUEUED_EVALUATIONS", _queued_evaluations, "queued evaluations"),
}


def queue_room_require(*, team: Team, kind: str) -> None:
    """Refuses (429) one more queued item of `kind` when the team is at its limit. Call it
    inside the transaction that queues the item: the team row stays locked until it commits,
    so two requests of one team count one after the other and cannot both take the last slot."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("queue_room_require must run inside the queueing transaction")
    setting, count, what = LIMITS[kind]
    limit = getattr(settings, setting)
    Team.objects.select_for_update().filter(pk=team.pk).first()
    if count(team) >= limit:
        raise QuotaExceeded(
            f"Team {team.name} already has {limit} {what}, its limit "
            f"({setting}={limit}): wait for some to finish or cancel some"
        )
