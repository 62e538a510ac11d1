"""The user's commands about experiments and runs: create, queue, cancel, resume, reorder.
What workers do with the queue (claim, finish, requeue, reap) is in queue.py."""

import logging

from django.db import IntegrityError, transaction

from datasets_app.models import DataFormat, DatasetVersion
from experiments import workers
from experiments.models import Experiment, Technique, TrainingRun
from experiments.training import hyperparameters as hp
from experiments.training import queue
from experiments.training.estimate import estimate
from finetune_hub import quotas
from finetune_hub.errors import Conflict, FieldError, ServiceError, full_clean, invalid
from finetune_hub.models import Role, Team
from finetune_hub.selectors import membership_require
from inference import base_models

log = logging.getLogger(__name__)


def context_length(config) -> int | None:
    return getattr(config, "max_position_embeddings", None)


def estimates_for(config, technique: str, params: dict, reward_run=None) -> dict:
    """The estimate on each kind of device a worker may have. GRPO's reward model is counted
    from its own base model's config."""
    reward_params = None
    if reward_run is not None:
        from experiments.training.estimate import count_params

        reward_params = count_params(base_models.load_config(reward_run.model_base))
    return {
        device: estimate(
            config,
            technique=technique,
            hyperparameters=params,
            device=device,
            reward_params=reward_params,
        ).as_dict()
        for device in ("cuda", "cpu")
    }


# Techniques that learn from pairs of answers; GRPO takes the prompts of any format that has
# them (a preference set's too), and the others learn from one answer per prompt.
PREFERENCE_TECHNIQUES = (Technique.DPO, Technique.REWARD)
PROMPT_FORMATS = (
    DataFormat.INSTRUCTION,
    DataFormat.CHAT,
    DataFormat.COMPLETION,
    DataFormat.PREFERENCE,
)


def _check_data(technique: str, version: DatasetVersion) -> None:
    if version.is_draft:
        raise invalid("Train on a published version, not a draft", field="dataset_version")
    label = Technique(technique).label
    if technique == Technique.GRPO:
        if version.format not in PROMPT_FORMATS:
            raise invalid(
                f"{label} samples answers to prompts: it needs an instruction, chat, "
                f"completion or preference dataset, not {version.format}",
                field="dataset_version",
            )
    elif (technique in PREFERENCE_TECHNIQUES) != (version.format == DataFormat.PREFERENCE):
        need = (
            "a preference dataset"
            if technique in PREFERENCE_TECHNIQUES
            else "a non-preference dataset"
        )
        raise invalid(f"{label} needs {need}", field="dataset_version")
    if not version.counts.get("train"):
        raise invalid("The version has no train examples", field="dataset_version")


def reward_run_check(*, team: Team, run_id: int | None) -> TrainingRun | None:
    """The reward model a GRPO experiment names: a finished reward-model run of the same
    team (another team's run is not found)."""
    if run_id is None:
        return None
    field = "hyperparameters.reward_run"
    from experiments.selectors import reward_run_in

    run = reward_run_in(team_id=team.pk, run_id=run_id)
    if run is None:
        raise invalid(f"No run {run_id} in this team", field=field)
    if run.experiment.technique != Technique.REWARD:
        trained = Technique(run.experiment.technique).label if run.experiment.technique else ""
        raise invalid(
            f"Run {run_id} is not a reward model ({trained or 'a tracked run'}); train one "
            "with the reward-model technique on a preference dataset",
            field=field,
        )
    if run.status != TrainingRun.Status.SUCCEEDED or not run.output_path:
        raise invalid(f"Run {run_id} has no trained reward model ({run.status})", field=field)
    return run


@transaction.atomic
def experiment_create(
    *,
    team: Team,
    name: str,
    dataset_version: DatasetVersion,
    base_model: str,
    technique: str,
    hyperparameters: dict | None,
    by,
    notes: str = "",
) -> Experiment:
    membership_require(user=by, team=team, role=Role.MEMBER)
    if dataset_version.dataset.team_id != team.pk:
        raise invalid("The dataset version belongs to another team", field="dataset_version")
    hp.technique_require(technique)
    _check_data(technique, dataset_version)
    config = base_models.load_config(base_model)
    params = hp.validate(technique, hyperparameters, context_length=context_length(config))
    reward_run = reward_run_check(team=team, run_id=params["reward_run"])
    experiment = Experiment(
        team=team,
        name=(name or "").strip(),
        dataset_version=dataset_version,
        base_model=base_model.strip(),
        technique=technique,
        hyperparameters=params,
        estimate=estimates_for(config, technique, params, reward_run),
        notes=notes,
        created_by=by,
    )
    full_clean(experiment, exclude=["team", "dataset_version", "created_by"], validate_unique=False)
    try:
        with transaction.atomic():
            experiment.save()
    except IntegrityError:
        raise Conflict(f"Team {team.name} has an experiment named {experiment.name!r}") from None
    return experiment


def capacity_problem(experiment: Experiment) -> str | None:
    """Why no live worker can take this experiment's runs, or None. With no worker live at
    all a CPU-sized run may wait in the queue; a CUDA-only run may not."""
    estimates = experiment.estimate
    live = list(workers.live_workers())
    if workers.any_fits(live, estimates):
        return None
    cuda = estimates["cuda"]
    if cuda["needs_cuda"] and not any(w.cuda for w in live):
        return (
            f"{Technique(experiment.technique).label} needs a CUDA GPU "
            f"(estimate {cuda['total_gb']:.1f} GB) and no live worker has one"
        )
    if not live:
        return None
    # The worker that comes closest: the most GPUs large enough, then the most memory.
    need = estimates["cuda"]["total_bytes"]
    best = max(
        live,
        key=lambda w: (
            sum(g["memory_bytes"] >= need for g in workers.gpus_of(w)),
            w.memory_bytes,
        ),
    )
    return f"The run {workers.fits(best, estimates, who='the largest live worker')}"


# Attempts a run gets before a crash fails it for good (a killed or lost process is retried).
CRASH_ATTEMPTS = TrainingRun._meta.get_field("max_attempts").default


@transaction.atomic
def run_enqueue(
    *, experiment: Experiment, by, priority: int = 0, dispatch: bool = True
) -> TrainingRun:
    """Queues a run. dispatch=False: the caller trains it itself (manage.py train)."""
    membership_require(user=by, team=experiment.team, role=Role.MEMBER)
    _priority_require(priority)
    if problem := capacity_problem(experiment):
        raise Conflict(problem)
    quotas.queue_room_require(team=experiment.team, kind="runs", queued=_queued(experiment.team))
    run = TrainingRun.objects.create(experiment=experiment, priority=priority, created_by=by)
    if dispatch:
        queue.dispatch_on_commit()
    return run


@transaction.atomic
def run_cancel(*, run: TrainingRun, by) -> TrainingRun:
    membership_require(user=by, team=run.experiment.team, role=Role.MEMBER)
    _queued_only(run, "cancelled")
    run = TrainingRun.objects.select_for_update().get(pk=run.pk)
    if run.status in TrainingRun.FINISHED:
        raise Conflict(f"The run is {run.status} already")
    if run.status == TrainingRun.Status.QUEUED:
        return queue.run_finish(
            run=run, status=TrainingRun.Status.CANCELLED, error="Cancelled while queued"
        )
    # Running: the supervisor sees the flag, signals the training process, keeps checkpoints.
    run.cancel_requested = True
    run.save(update_fields=["cancel_requested"])
    return run


@transaction.atomic
def run_resume(*, run: TrainingRun, by) -> TrainingRun:
    membership_require(user=by, team=run.experiment.team, role=Role.MEMBER)
    _queued_only(run, "resumed")
    run = TrainingRun.objects.select_for_update().get(pk=run.pk)
    if run.status not in (TrainingRun.Status.FAILED, TrainingRun.Status.CANCELLED):
        raise Conflict(f"Only a failed or cancelled run resumes; this one is {run.status}")
    if problem := capacity_problem(run.experiment):
        raise Conflict(problem)
    quotas.queue_room_require(
        team=run.experiment.team, kind="runs", queued=_queued(run.experiment.team)
    )
    run.status = TrainingRun.Status.QUEUED
    run.cancel_requested = False
    # A resume the user asks for is not a crash retry: the run gets its full crash budget
    # again from here, and the cancelled or failed message goes.
    run.max_attempts = max(run.max_attempts, run.attempt + CRASH_ATTEMPTS)
    run.error = ""
    run.finished_at = None
    run.save()
    queue.dispatch_on_commit()
    return run


def _queued(team: Team):
    """The team's queued runs, which its quota counts."""
    return TrainingRun.objects.filter(experiment__team=team, status=TrainingRun.Status.QUEUED)


def _queued_only(run: TrainingRun, what: str) -> None:
    if run.source == TrainingRun.Source.TRACKED:
        raise Conflict(
            f"Run {run.pk} is trained elsewhere: it is {what} by its own process, not here"
        )


def _priority_require(priority: int) -> None:
    if not -1000 <= priority <= 1000:
        raise ServiceError(
            "Invalid priority",
            status=422,
            errors=[FieldError(field="priority", message="between -1000 and 1000")],
        )


@transaction.atomic
def run_set_priority(*, run: TrainingRun, priority: int, by) -> TrainingRun:
    membership_require(user=by, team=run.experiment.team, role=Role.MEMBER)
    if run.status != TrainingRun.Status.QUEUED:
        raise Conflict("Only a queued run can be reordered")
    _priority_require(priority)
    TrainingRun.objects.filter(pk=run.pk).update(priority=priority)
    run.refresh_from_db()
    return run
