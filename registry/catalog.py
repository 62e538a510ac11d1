"""Registry writes about what a model or version says of itself: names, descriptions, tags,
MLflow's stage, versions recorded from a source URI (MLflow's create_model_version), removing
an alias (an event too) and deleting a model. Moves of an alias stay in services.py."""

from django.db import IntegrityError, transaction
from django.db.models import Max, ProtectedError
from django.utils import timezone

from experiments.models import TrainingRun
from finetune_hub.errors import Conflict, ServiceError, full_clean, invalid
from finetune_hub.model_files import is_adapter
from finetune_hub.models import Role
from finetune_hub.selectors import membership_require
from finetune_hub.storage import artifact_path
from registry import policy as policies
from registry.export import safetensors_only
from registry.models import AliasEvent, ModelVersion, RegisteredModel
from registry.services import _locked

MAX_TAG_KEY = 250
MAX_TAG_VALUE = 100_000


def _touch(row, *fields: str) -> None:
    row.updated_at = timezone.now()
    row.save(update_fields=[*fields, "updated_at"])


def _member(model: RegisteredModel, by) -> None:
    membership_require(user=by, team=model.team, role=Role.MEMBER)


def tags_checked(tags: dict) -> dict:
    for key, value in tags.items():
        if not key or len(key) > MAX_TAG_KEY:
            raise invalid(f"A tag key is 1 to {MAX_TAG_KEY} characters", field="key")
        if len(value) > MAX_TAG_VALUE:
            raise invalid(f"A tag value is at most {MAX_TAG_VALUE} characters", field="value")
    return tags


@transaction.atomic
def model_rename(*, model: RegisteredModel, new_name: str, by) -> RegisteredModel:
    _member(model, by)
    model.name = new_name
    full_clean(model, exclude=["team", "created_by"], validate_unique=False)
    try:
        with transaction.atomic():
            _touch(model, "name")
    except IntegrityError:
        raise Conflict(f"Team {model.team.name} has a model named {new_name!r}") from None
    return model


@transaction.atomic
def model_describe(*, model: RegisteredModel, description: str, by) -> RegisteredModel:
    _member(model, by)
    model.description = description
    _touch(model, "description")
    return model


@transaction.atomic
def model_tags_change(
    *, model: RegisteredModel, by, set_tags: dict | None = None, delete: str | None = None
) -> RegisteredModel:
    _member(model, by)
    model = RegisteredModel.objects.select_for_update().get(pk=model.pk)
    model.tags = {**model.tags, **tags_checked(set_tags or {})}
    model.tags.pop(delete, None)
    _touch(model, "tags")
    return model


@transaction.atomic
def model_delete(*, model: RegisteredModel, by) -> None:
    """The model with its versions; one whose aliases have history, or whose versions were
    served or evaluated, is kept (that history is kept whole)."""
    membership_require(user=by, team=model.team, role=Role.ADMIN)
    if model.alias_events.exists():
        raise Conflict(f"{model.name} has alias history, which is kept whole")
    try:
        with transaction.atomic():
            model.delete()
    except ProtectedError:
        raise Conflict(f"{model.name} has versions other records point at") from None


def version_record(
    *,
    model: RegisteredModel,
    source: str,
    by,
    run: TrainingRun | None = None,
    run_ref: str = "",
    run_link: str = "",
    logged_model_id: str = "",
    tags: dict | None = None,
    description: str = "",
) -> ModelVersion:
    """A version as MLflow registers one: its source URI as given. `run` is the hub run whose
    artifacts the source names, for lineage; when that run holds a model (weights and a base
    model) the version takes its files and can be served, else it has none (not servable)."""
    _member(model, by)
    if run is not None and run.experiment.team_id != model.team_id:
        raise invalid("No such run in this team", field="run_id")
    files = _model_files(run) if run is not None else {}
    with transaction.atomic():
        RegisteredModel.objects.select_for_update().get(pk=model.pk)
        number = (model.versions.aggregate(n=Max("number"))["n"] or 0) + 1
        version = ModelVersion.objects.create(
            registered_model=model,
            number=number,
            source_run=run,
            dataset_version=run.experiment.dataset_version if run else None,
            base_model=run.model_base if run else "",
            **files,
            source=source,
            run_ref=run_ref,
            run_link=run_link,
            logged_model_id=logged_model_id,
            tags=tags_checked(tags or {}),
            description=description,
            created_by=by,
            updated_at=timezone.now(),
        )
        _touch(model)
        return version


def _model_files(run: TrainingRun) -> dict:
    """The run's output as a version's files, as version_register takes them; none when the
    run is not usable as a model (no output yet, no base model, a reward model)."""
    try:
        run.model_require()
        folder = safetensors_only(artifact_path(run.model_path))
    except ServiceError:
        return {}
    return {
        "base_model_info": run.base_model_info,
        "kind": "adapter" if is_adapter(folder) else "full",
        "artifact_path": run.model_path,
        "artifacts": run.model_files,
    }


@transaction.atomic
def version_change(
    *,
    version: ModelVersion,
    by,
    description: str | None = None,
    stage: str | None = None,
    set_tags: dict | None = None,
    delete: str | None = None,
) -> ModelVersion:
    _member(version.registered_model, by)
    version = ModelVersion.objects.select_for_update().get(pk=version.pk)
    if description is not None:
        version.description = description
    if stage is not None:
        version.stage = stage
    version.tags = {**version.tags, **tags_checked(set_tags or {})}
    version.tags.pop(delete, None)
    _touch(version, "description", "stage", "tags")
    return version


def alias_remove(*, model: RegisteredModel, alias: str, by, reason: str) -> AliasEvent | None:
    """The alias points nowhere after this; the removal is an event of its chain, so the
    history shows it and a rollback brings the last holder back. None: no such alias. A
    gated alias that needs approval is removed by an approver only."""
    policy = policies.parse(model.policy)
    gated = alias in policy.gated_aliases and policy.require_approval
    membership_require(user=by, team=model.team, role=Role.APPROVER if gated else Role.MEMBER)
    with transaction.atomic():
        last, holder = _locked(model, alias)
        if holder is None:
            return None
        event = AliasEvent.objects.create(
            registered_model=model,
            alias=alias,
            sequence=last.sequence + 1 if last else 1,
            action=AliasEvent.Action.REMOVE,
            from_version=holder,
            to_version=None,
            actor=by,
            reason=reason,
        )
        model.aliases.filter(name=alias).delete()
        return event
