"""Evaluation runs: create (validated, enqueued on commit) and retry. Their execution, and
the reaping of one whose worker died, is the worker's side: queue.py."""

from django.db import transaction
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from datasets_app.models import DataFormat, DatasetVersion
from evaluation import metrics, queue
from evaluation.models import EvaluationRun
from evaluation.queue import SPECIAL
from evaluation.subjects import Subject
from experiments import workers
from finetune_hub import quotas
from finetune_hub.errors import Conflict, ServiceError, from_pydantic, invalid
from finetune_hub.models import Role, Team
from finetune_hub.selectors import membership_require

DEFAULT_METRICS = {
    DataFormat.CLASSIFICATION: ["accuracy", "f1", "loss"],
    DataFormat.PREFERENCE: ["loss"],
}
TEXT_METRICS = ["bleu", "chrf", "ter", "rouge", "exact_match", "loss"]


class Generation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(64, ge=1, le=4096)
    batch_size: int = Field(8, ge=1, le=512)
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0, le=5)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = Field(0, ge=0)


def _generation(raw: dict | None) -> dict:
    try:
        return Generation.model_validate(raw or {}).model_dump()
    except ValidationError as exc:
        raise ServiceError(
            "Invalid generation settings",
            status=422,
            errors=from_pydantic(exc, under="generation"),
        ) from None


def _metrics(names: list[str] | None, fmt: str) -> list[str]:
    names = names or DEFAULT_METRICS.get(fmt, TEXT_METRICS)
    if fmt == DataFormat.PREFERENCE and set(names) - SPECIAL:
        raise invalid(
            "A preference split is scored by loss only (its 'chosen' answers)",
            field="metrics",
            status=422,
        )
    for name in names:
        if name in SPECIAL:
            continue
        try:
            metrics.source(name)  # the allow-list: nothing is loaded for an unknown name
        except metrics.UnknownMetric as exc:
            raise invalid(f"{exc} or loss", field="metrics", status=422) from None
    return list(dict.fromkeys(names))


@transaction.atomic
def evaluation_create(
    *,
    team: Team,
    subject: Subject | dict,
    dataset_version: DatasetVersion,
    split: str = "eval",
    metric_names: list[str] | None = None,
    generation_settings: dict | None = None,
    by,
) -> EvaluationRun:
    membership_require(user=by, team=team, role=Role.MEMBER)
    if dataset_version.dataset.team_id != team.pk or dataset_version.is_draft:
        raise invalid("No such published dataset version in this team", field="dataset_version")
    if not dataset_version.counts.get(split):
        raise invalid(f"The version has no {split!r} examples", field="split")
    quotas.queue_room_require(team=team, kind="evaluations", queued=_queued(team))
    evaluation = EvaluationRun.objects.create(
        team=team,
        dataset_version=dataset_version,
        split=split,
        metrics=_metrics(metric_names, dataset_version.format),
        generation=_generation(generation_settings),
        created_by=by,
        samples_total=dataset_version.counts[split],
        **Subject.from_api(subject).for_team(team).fields,
    )
    queue.dispatch_on_commit(evaluation)
    return evaluation


def _queued(team: Team):
    """The team's queued evaluations, which its quota counts."""
    return EvaluationRun.objects.filter(team=team, status=EvaluationRun.Status.QUEUED)


@transaction.atomic
def evaluation_retry(*, evaluation: EvaluationRun, by) -> EvaluationRun:
    membership_require(user=by, team=evaluation.team, role=Role.MEMBER)
    evaluation = EvaluationRun.objects.select_for_update().get(pk=evaluation.pk)
    if evaluation.status == EvaluationRun.Status.QUEUED:
        # Its token may be lost (a Redis restart); one more is harmless, as the claim is a
        # conditional update that one execution wins.
        queue.dispatch_on_commit(evaluation)
        return evaluation
    dead = (
        queue.evaluations_abandoned(stale_after=workers.LIVE_WITHIN)
        .filter(pk=evaluation.pk)
        .exists()
    )
    if evaluation.status != EvaluationRun.Status.FAILED and not dead:
        raise Conflict(
            "Only a failed or queued evaluation, or a running one whose worker died, is "
            f"retried; this one is {evaluation.status}"
        )
    quotas.queue_room_require(
        team=evaluation.team, kind="evaluations", queued=_queued(evaluation.team)
    )
    EvaluationRun.objects.filter(pk=evaluation.pk).update(
        status=EvaluationRun.Status.QUEUED,
        error="",
        worker=None,
        max_attempts=max(evaluation.max_attempts, evaluation.attempt + 1),
    )
    queue.dispatch_on_commit(evaluation)
    evaluation.refresh_from_db()
    return evaluation
