"""MLflow's lifecycle of experiments and runs, on finetune_hub's rows: delete (hidden from
lists, kept, restorable), restore, rename, the experiment's tags, a run's tag removed, and
the team's "Default" experiment (MLflow's experiment 0). The MLflow door
(experiments/mlflow/) and the dashboard's Restore buttons both come here, so both follow
the same rules: members of the owning team only; a deleted experiment's runs are deleted
with it and restored with it, as MLflow's store does."""

from django.db import IntegrityError, transaction
from django.utils import timezone

from experiments import tracked
from experiments.models import Experiment, TrainingRun
from finetune_hub.errors import Conflict, NotFound, ServiceError, invalid
from finetune_hub.models import Role, Team
from finetune_hub.selectors import membership_require

DEFAULT_NAME = "Default"
MAX_NAME = 100  # Experiment.name
MAX_LOCATION = 1000  # Experiment.artifact_location


def _name_checked(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > MAX_NAME:
        raise invalid(f"name: 1 to {MAX_NAME} characters", field="name")
    return name


def experiment_create(
    *, team: Team, name: str, by, tags=None, artifact_location: str = ""
) -> Experiment:
    """A project of tracked runs, with MLflow's tags and artifact location (kept as given and
    returned; runs' artifacts stay under the artifact root). A taken name is a conflict."""
    membership_require(user=by, team=team, role=Role.MEMBER)
    name = _name_checked(name)
    if len(artifact_location or "") > MAX_LOCATION:
        raise invalid(
            f"artifact_location: at most {MAX_LOCATION} characters", field="artifact_location"
        )
    tags = tracked.tags_checked(tags)
    try:
        with transaction.atomic():
            return Experiment.objects.create(
                team=team,
                name=name,
                tracked=True,
                created_by=by,
                tags=tags,
                artifact_location=artifact_location or "",
                updated_at=timezone.now(),
            )
    except IntegrityError:
        raise ServiceError(
            f"Experiment '{name}' already exists.", status=409, code="conflict"
        ) from None


def experiment_default(*, team: Team, by) -> Experiment:
    """The team's Default experiment (MLflow's "0"), made on first use: an experiment already
    named Default becomes it. Two first uses at once: the constraint decides, the loser reads."""
    found = Experiment.objects.filter(team=team, mlflow_default=True).first()
    if found is not None:
        return found
    membership_require(user=by, team=team)
    try:
        with transaction.atomic():
            named = Experiment.objects.filter(team=team, name=DEFAULT_NAME).first()
            if named is not None:
                Experiment.objects.filter(pk=named.pk).update(mlflow_default=True)
                named.mlflow_default = True
                return named
            return Experiment.objects.create(
                team=team, name=DEFAULT_NAME, tracked=True, created_by=by, mlflow_default=True
            )
    except IntegrityError:
        return Experiment.objects.get(team=team, mlflow_default=True)


def _writable(experiment: Experiment, by) -> None:
    membership_require(user=by, team=experiment.team, role=Role.MEMBER)


def _active(experiment: Experiment) -> None:
    if experiment.deleted_at is not None:
        raise invalid(
            f"The experiment {experiment.pk} must be in the 'active' state. "
            "Current state is deleted.",
            field="experiment_id",
        )


@transaction.atomic
def experiment_delete(*, experiment: Experiment, by) -> Experiment:
    """Marks the experiment and its runs deleted (MLflow refuses the Default one)."""
    _writable(experiment, by)
    if experiment.mlflow_default:
        raise invalid("Cannot delete the default experiment '0'.", field="experiment_id")
    _active(experiment)
    now = timezone.now()
    Experiment.objects.filter(pk=experiment.pk).update(deleted_at=now, updated_at=now)
    TrainingRun.objects.filter(experiment=experiment, deleted_at=None).update(deleted_at=now)
    experiment.deleted_at = experiment.updated_at = now
    return experiment


@transaction.atomic
def experiment_restore(*, experiment: Experiment, by) -> Experiment:
    """Brings a deleted experiment back, with its runs."""
    _writable(experiment, by)
    if experiment.deleted_at is None:
        raise invalid(
            f"Cannot restore an active experiment. Experiment {experiment.pk} is active.",
            field="experiment_id",
        )
    now = timezone.now()
    Experiment.objects.filter(pk=experiment.pk).update(deleted_at=None, updated_at=now)
    TrainingRun.objects.filter(experiment=experiment).update(deleted_at=None)
    experiment.deleted_at, experiment.updated_at = None, now
    return experiment


@transaction.atomic
def experiment_rename(*, experiment: Experiment, name: str, by) -> Experiment:
    _writable(experiment, by)
    _active(experiment)
    name = _name_checked(name)
    if Experiment.objects.filter(team=experiment.team, name=name).exclude(pk=experiment.pk):
        raise Conflict(f"Experiment '{name}' already exists.")
    now = timezone.now()
    Experiment.objects.filter(pk=experiment.pk).update(name=name, updated_at=now)
    experiment.name, experiment.updated_at = name, now
    return experiment


@transaction.atomic
def experiment_tag_set(*, experiment: Experiment, key: str, value: str, by) -> Experiment:
    _writable(experiment, by)
    _active(experiment)
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    new = tracked.tags_checked({key: value})
    if len(experiment.tags.keys() | new.keys()) > tracked.MAX_TAGS:
        raise invalid(f"tags: at most {tracked.MAX_TAGS} an experiment", field="tags")
    experiment.tags = {**experiment.tags, **new}
    experiment.updated_at = timezone.now()
    experiment.save(update_fields=["tags", "updated_at"])
    return experiment


@transaction.atomic
def experiment_tag_delete(*, experiment: Experiment, key: str, by) -> Experiment:
    _writable(experiment, by)
    _active(experiment)
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if key not in experiment.tags:
        raise NotFound(f"No tag with name: {key} in experiment with id {experiment.pk}")
    del experiment.tags[key]
    experiment.updated_at = timezone.now()
    experiment.save(update_fields=["tags", "updated_at"])
    return experiment


@transaction.atomic
def run_delete(*, run: TrainingRun, by) -> TrainingRun:
    """Marks a run deleted: hidden from lists, it takes no writes until restored. A run a
    worker here is training (queued or running) is cancelled first, not deleted."""
    membership_require(user=by, team=run.experiment.team, role=Role.MEMBER)
    if run.source != TrainingRun.Source.TRACKED and run.status not in TrainingRun.FINISHED:
        raise Conflict(f"Run {run.pk} is {run.status}: cancel it before deleting it")
    if run.deleted_at is None:
        run.deleted_at = timezone.now()
        TrainingRun.objects.filter(pk=run.pk).update(deleted_at=run.deleted_at)
    return run


@transaction.atomic
def run_restore(*, run: TrainingRun, by) -> TrainingRun:
    membership_require(user=by, team=run.experiment.team, role=Role.MEMBER)
    if run.experiment.deleted_at is not None:
        raise invalid(
            f"Run {run.pk}'s experiment is deleted: restore the experiment", field="run_id"
        )
    TrainingRun.objects.filter(pk=run.pk).update(deleted_at=None)
    run.deleted_at = None
    return run


@transaction.atomic
def run_tag_delete(*, run: TrainingRun, key: str, by) -> TrainingRun:
    membership_require(user=by, team=run.experiment.team, role=Role.MEMBER)
    tracked.active_require(run)
    run = TrainingRun.objects.select_for_update().get(pk=run.pk)
    if key not in run.tags:
        raise NotFound(f"No tag with name: {key} in run with id {run.pk}")
    del run.tags[key]
    run.save(update_fields=["tags"])
    return run
