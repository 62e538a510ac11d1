"""The registry's objects in MLflow's JSON (model_registry.proto's RegisteredModel and
ModelVersion), and finding them by MLflow's name and version within the team."""

from django.db.models import Prefetch

from experiments.mlflow.protocol import MlflowError, ms
from finetune_hub.models import Team
from registry.models import Alias, ModelVersion, RegisteredModel

STAGES = ["None", "Staging", "Production", "Archived"]


def model_of(team: Team, name: str) -> RegisteredModel:
    found = RegisteredModel.objects.filter(team=team, name=name).first()
    if found is None:
        raise MlflowError(404, f"Registered Model with name={name} not found")
    return found


def version_of(team: Team, name: str, version: str) -> ModelVersion:
    if not version.isdigit() or len(version) > 9:
        raise MlflowError(400, f"Parameter 'version' must be an integer, got '{version}'.")
    found = (
        ModelVersion.objects.select_related("registered_model", "created_by")
        .filter(registered_model__team=team, registered_model__name=name, number=int(version))
        .first()
    )
    if found is None:
        raise MlflowError(404, f"Model Version (name={name}, version={version}) not found")
    return found


def versions_with_aliases(queryset):
    return queryset.select_related("registered_model", "created_by").prefetch_related(
        Prefetch("aliases", queryset=Alias.objects.order_by("name"))
    )


def _tags(tags: dict) -> list[dict]:
    return [{"key": k, "value": v} for k, v in tags.items()]


def version_json(v: ModelVersion) -> dict:
    return {
        "name": v.registered_model.name,
        "version": str(v.number),
        "creation_timestamp": ms(v.created_at),
        "last_updated_timestamp": ms(v.updated_at or v.created_at),
        "user_id": v.created_by.username,
        "current_stage": v.stage,
        "description": v.description,
        "source": v.source or f"models:/{v.registered_model.name}/{v.number}",
        "run_id": v.run_ref or (str(v.source_run_id) if v.source_run_id else ""),
        "run_link": v.run_link,
        "status": v.status,
        "tags": _tags(v.tags),
        "aliases": [a.name for a in v.aliases.all()],
        **({"model_id": v.logged_model_id} if v.logged_model_id else {}),
    }


def latest_per_stage(model: RegisteredModel, stages: list[str] | None = None) -> list:
    """The newest version in each stage (all stages when none are named), as MLflow's
    get_latest_versions answers."""
    wanted = {s.lower() for s in stages or STAGES}
    latest = {}
    for v in versions_with_aliases(model.versions.order_by("number")):
        if v.stage.lower() in wanted:
            latest[v.stage] = v
    return sorted(latest.values(), key=lambda v: v.number)


def model_json(m: RegisteredModel) -> dict:
    return {
        "name": m.name,
        "creation_timestamp": ms(m.created_at),
        "last_updated_timestamp": ms(m.updated_at or m.created_at),
        "user_id": m.created_by.username,
        "description": m.description,
        "latest_versions": [version_json(v) for v in latest_per_stage(m)],
        "tags": _tags(m.tags),
        "aliases": [
            {"alias": a.name, "version": str(a.version.number)}
            for a in m.aliases.select_related("version").order_by("name")
        ],
    }
