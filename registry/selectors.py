from datetime import datetime

from django.db.models import Avg, Count, Q, QuerySet

from evaluation.general.forgetting import forgetting_check
from evaluation.models import EvaluationRun
from evaluation.subjects import Subject
from experiments.models import TrainingRun
from finetune_hub.errors import NotFound
from finetune_hub.selectors import visible_to
from registry.models import Alias, AliasEvent, ModelVersion, PromotionRequest, RegisteredModel


def models_for(*, user) -> QuerySet[RegisteredModel]:
    return visible_to(RegisteredModel.objects.select_related("team"), user=user)


def models_for_page(*, user) -> QuerySet[RegisteredModel]:
    return (
        models_for(user=user)
        .order_by("team__name", "name", "pk")
        .prefetch_related("aliases__version")
    )


def versions_of(model: RegisteredModel) -> QuerySet[ModelVersion]:
    return (
        model.versions.select_related("source_run__experiment")
        .prefetch_related("aliases")
        .order_by("-number")
    )


def pending_requests(model: RegisteredModel) -> QuerySet[PromotionRequest]:
    return model.promotion_requests.filter(status=PromotionRequest.Status.PENDING).select_related(
        "version", "requested_by"
    )


def pending_request(*, model: RegisteredModel, request_id: int) -> PromotionRequest:
    request = pending_requests(model).filter(pk=request_id).first()
    if request is None:
        raise NotFound("No such pending promotion request")
    return request


def registrable_runs(*, user, model: RegisteredModel | None = None) -> QuerySet[TrainingRun]:
    """Succeeded runs with an output the user can register (in `model`'s team, and not
    registered in it already), newest first. A tracked run without a base model is left
    out: its adapter has nothing to load onto."""
    runs = visible_to(
        TrainingRun.objects.generators(),
        user=user,
        team_path="experiment__team",
    ).exclude(Q(base_model="") & Q(experiment__base_model=""))
    if model is not None:
        registered = ModelVersion.objects.filter(registered_model=model).values("source_run_id")
        runs = runs.filter(experiment__team=model.team_id).exclude(pk__in=registered)
    return runs.select_related("experiment").order_by("-finished_at", "-pk")


def model_get(*, user, name: str, team: int | None = None) -> RegisteredModel:
    """By name among the caller's teams (a team id disambiguates a name used twice)."""
    qs = models_for(user=user).filter(name=name)
    if team is not None:
        qs = qs.filter(team_id=team)
    model = qs.order_by("team_id").first()
    if model is None:
        raise NotFound("Registered model not found")
    return model


def version_get(*, model: RegisteredModel, number: int) -> ModelVersion:
    version = (
        model.versions.select_related("source_run__experiment", "dataset_version__dataset")
        .filter(number=number)
        .first()
    )
    if version is None:
        raise NotFound("Model version not found")
    return version


def lineage(version: ModelVersion) -> dict:
    """From the version back to the data: run, experiment, dataset version and the versions
    (annotation drafts published) it descends from."""
    run = version.source_run
    chain, data = [], version.dataset_version
    while data is not None:
        chain.append(
            {
                "dataset": data.dataset_id,
                "name": data.dataset.name,
                "number": data.number,
                "sha256": data.sha256,
                "message": data.message,
                "annotation": data.validation_report.get("annotation"),
                "published_by": data.published_by.username if data.published_by else None,
                "published_at": data.published_at,
            }
        )
        data = data.parent
    return {
        "model_version": {"model": version.registered_model.name, "number": version.number},
        # None for a version registered through MLflow from a source that is not a run here.
        "run": run
        and {
            "id": run.pk,
            "status": run.status,
            "attempt": run.attempt,
            "source": run.source,
            "name": run.name,
            "steps": run.step,
            "finished_at": run.finished_at,
            "peak_memory_bytes": run.peak_memory_bytes,
        },
        "experiment": run
        and {
            "id": run.experiment.pk,
            "name": run.experiment.name,
            "technique": run.experiment.technique,
            "hyperparameters": {**run.experiment.hyperparameters, **run.params},
        },
        "source": version.source,
        "base_model": {"ref": version.base_model, **version.base_model_info},
        "dataset_versions": chain,
    }


def evaluations_of(version: ModelVersion) -> QuerySet[EvaluationRun]:
    return (
        EvaluationRun.objects.filter(
            Subject.of_version(version).evaluations(), status=EvaluationRun.Status.SUCCEEDED
        )
        .select_related("dataset_version__dataset")
        .order_by("-finished_at")
    )


def forgetting_cards(version: ModelVersion) -> list[dict]:
    """The version's forgetting check (none for a version of a bare base model), its task
    row on the data its run trained on (the eval split)."""
    if version.source_run is None:
        return []
    data = version.source_run.experiment.dataset_version
    card = forgetting_check(
        team=version.registered_model.team,
        subject=Subject.of_version(version),
        task=(data, "eval") if data is not None else None,
    )
    return [card] if card else []


def history(*, model: RegisteredModel, alias: str) -> QuerySet[AliasEvent]:
    return (
        AliasEvent.objects.filter(registered_model=model, alias=alias)
        .select_related("from_version", "to_version", "actor", "approved_by")
        .order_by("sequence")
    )


def model_history(*, model: RegisteredModel) -> QuerySet[AliasEvent]:
    """Every alias event of the model, newest first (the model page shows it a page at a time)."""
    return (
        AliasEvent.objects.filter(registered_model=model)
        .select_related("from_version", "to_version", "actor", "approved_by")
        .order_by("-created_at", "-pk")
    )


def holder_at(*, model: RegisteredModel, alias: str, when: datetime) -> AliasEvent | None:
    return (
        AliasEvent.objects.filter(registered_model=model, alias=alias, created_at__lte=when)
        .order_by("-sequence")
        .select_related("to_version")
        .first()
    )


def aliases_of(model: RegisteredModel) -> QuerySet[Alias]:
    return model.aliases.select_related("version").order_by("name")


def feedback_by_version(model: RegisteredModel) -> list[dict]:
    rows = model.versions.annotate(
        ups=Count("feedback", filter=Q(feedback__rating=1)),
        downs=Count("feedback", filter=Q(feedback__rating=-1)),
        mean=Avg("feedback__rating"),
    ).order_by("number")
    return [{"version": v.number, "up": v.ups, "down": v.downs} for v in rows]
