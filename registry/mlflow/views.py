"""The HTTP handlers of MLflow's model registry (registered-models/*, model-versions/*,
aliases): MLflow's request (experiments.mlflow.protocol.endpoint), the registry's services,
MLflow's shape. An alias moves through the promotion policy (services.alias_promote), so it
keeps its history; a refused move is MLflow's INVALID_STATE with the policy's reason."""

import json
import posixpath
import re

from django.db import transaction
from django.http import FileResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from experiments import artifact_tree, logged_models
from experiments.mlflow import artifacts
from experiments.mlflow.protocol import MlflowError, endpoint, run_of
from finetune_hub.errors import PolicyRefused, ServiceError
from registry import catalog, services
from registry.mlflow import messages as m
from registry.mlflow import search
from registry.mlflow.shapes import (
    STAGES,
    latest_per_stage,
    model_json,
    model_of,
    version_json,
    version_of,
    versions_with_aliases,
)
from registry.mlflow.sources import PROMPT_TAG, source_check
from registry.models import ModelVersion, PromotionRequest, RegisteredModel

ALIAS = re.compile(r"^[\w\-]*$")
VIA = "set through MLflow's API"
PROMPT_TEXT = "mlflow.prompt.text"


def tags_in(items) -> dict:
    tags = {tag.key: tag.value for tag in items}
    for key, value in tags.items():
        if len(value) > catalog.MAX_TAG_VALUE:
            if key == PROMPT_TEXT:
                raise MlflowError(
                    400, f"Prompt text exceeds max length of {catalog.MAX_TAG_VALUE} characters."
                )
            raise MlflowError(
                400,
                f"'value' had length {len(value)}, which exceeded length limit of "
                f"{catalog.MAX_TAG_VALUE}",
            )
    return tags


def _name_checked(name: str, parameter: str = "name") -> str:
    if not name.strip():
        raise MlflowError(400, f"Missing value for required parameter '{parameter}'.")
    if "/" in name or ":" in name:
        raise MlflowError(400, f"Invalid model name '{name}'. Names cannot contain '/' or ':'.")
    if name == "." or name.startswith(".."):  # MLflow's path_not_unique, without '/'
        raise MlflowError(
            400,
            f"Invalid value {json.dumps(name)} for parameter '{parameter}' supplied: Names may "
            "be treated as files in certain cases, and must not resolve to other names when "
            f"treated as such. This name would resolve to {posixpath.normpath(name)!r}",
        )
    return name


def _name_free(team, name: str) -> None:
    if RegisteredModel.objects.filter(team=team, name=name).exists():
        raise MlflowError(
            400, f"Registered Model (name={name}) already exists.", "RESOURCE_ALREADY_EXISTS"
        )


def _model_answer(model: RegisteredModel) -> JsonResponse:
    return JsonResponse({"registered_model": model_json(model)})


def _version_answer(version: ModelVersion) -> JsonResponse:
    version = versions_with_aliases(ModelVersion.objects.filter(pk=version.pk)).get()
    return JsonResponse({"model_version": version_json(version)})


# ---------------------------------------------------------------------- registered models


@endpoint("POST", message=m.CreateRegisteredModel)
def model_create(request, user, team, message):
    name = _name_checked(message.name)
    _name_free(team, name)
    with transaction.atomic():
        model = services.model_create(
            team=team, name=name, by=user, description=message.description or ""
        )
        if message.tags:
            model = catalog.model_tags_change(model=model, by=user, set_tags=tags_in(message.tags))
    return _model_answer(model)


@endpoint("GET", message=m.ModelRef)
def model_get(request, user, team, message):
    return _model_answer(model_of(team, message.name))


@endpoint("POST", message=m.RenameRegisteredModel)
def model_rename(request, user, team, message):
    model = model_of(team, message.name)
    new_name = _name_checked(message.new_name or "", "new_name")
    if new_name != model.name:
        _name_free(team, new_name)
    return _model_answer(catalog.model_rename(model=model, new_name=new_name, by=user))


@endpoint("PATCH", "POST", message=m.UpdateRegisteredModel)
def model_update(request, user, team, message):
    model = model_of(team, message.name)
    if message.description is not None:
        model = catalog.model_describe(model=model, description=message.description, by=user)
    return _model_answer(model)


@endpoint("DELETE", message=m.ModelRef)
def model_delete(request, user, team, message):
    catalog.model_delete(model=model_of(team, message.name), by=user)
    return JsonResponse({})


@endpoint("GET", message=m.SearchRegisteredModels)
def model_search(request, user, team, message):
    rows = list(RegisteredModel.objects.filter(team=team).select_related("created_by"))
    rows = search.filtered(rows, message.filter, search.MODEL_FIELDS)
    rows = search.ordered(rows, message.order_by, search.MODEL_ORDER, [("name", True)])
    chunk, token = search.page(rows, message.max_results, message.page_token)
    out = {"registered_models": [model_json(r) for r in chunk]}
    if token:
        out["next_page_token"] = token
    return JsonResponse(out)


@endpoint("GET", "POST", message=m.GetLatestVersions)
def latest_versions(request, user, team, message):
    model = model_of(team, message.name)
    found = latest_per_stage(model, message.stages)
    return JsonResponse({"model_versions": [version_json(v) for v in found]})


@endpoint("POST", message=m.ModelTag)
def model_tag_set(request, user, team, message):
    model = model_of(team, message.name)
    catalog.model_tags_change(model=model, by=user, set_tags=tags_in([message]))
    return JsonResponse({})


@endpoint("DELETE", message=m.ModelTagDelete)
def model_tag_delete(request, user, team, message):
    catalog.model_tags_change(model=model_of(team, message.name), by=user, delete=message.key)
    return JsonResponse({})


# ---------------------------------------------------------------------- aliases


def _alias_checked(alias: str, reserved: bool = True) -> str:
    if not alias:
        raise MlflowError(400, "Registered model alias name cannot be empty.")
    if not ALIAS.match(alias):
        raise MlflowError(
            400,
            f"Invalid alias name: '{alias}'. Names may only contain alphanumerics, "
            "underscores (_), and dashes (-).",
        )
    if reserved and alias.lower() == "latest":
        raise MlflowError(400, "'latest' alias name (case insensitive) is reserved.")
    if reserved and re.fullmatch(r"[vV]\d+", alias):
        raise MlflowError(400, f"Version alias name '{alias}' is reserved.")
    return alias.lower()  # the registry's aliases are lower case (services._validate_alias)


@endpoint("DELETE", message=m.AliasRef)
def alias_delete(request, user, team, message):
    model = model_of(team, message.name)
    name = _alias_checked(message.alias, reserved=False)
    catalog.alias_remove(model=model, alias=name, by=user, reason=VIA)
    return JsonResponse({})


@csrf_exempt
def alias(request, **kwargs):
    """One URL, three calls, told apart by the method, as MLflow's routes are."""
    view = {"POST": alias_set, "DELETE": alias_delete}.get(request.method, alias_get)
    return view(request, **kwargs)


@endpoint("POST", message=m.SetAlias)
def alias_set(request, user, team, message):
    model = model_of(team, message.name)
    alias_name = _alias_checked(message.alias)
    version = version_of(team, model.name, message.version)
    if version.aliases.filter(name=alias_name).exists():
        return JsonResponse({})  # MLflow sets an alias again without complaint
    try:
        result = services.alias_promote(
            model=model, alias=alias_name, version=version, by=user, reason=VIA
        )
    except PolicyRefused as exc:
        if exc.status == 403:
            raise MlflowError(403, exc.detail) from None
        raise MlflowError(400, exc.detail, "INVALID_STATE") from None
    if isinstance(result, PromotionRequest):
        raise MlflowError(
            400,
            f"Moving alias '{alias_name}' to version {version.number} needs an approver: "
            f"promotion request {result.pk} waits on the model's registry page",
            "INVALID_STATE",
        )
    return JsonResponse({})


@endpoint("GET", message=m.AliasRef)
def alias_get(request, user, team, message):
    model = model_of(team, message.name)
    alias_name = message.alias.lower()
    if alias_name == "latest":
        found = model.versions.order_by("-number").first()
        if found is None:
            raise MlflowError(404, f"Latest version not found for model {model.name}.")
        return _version_answer(found)
    held = model.aliases.filter(name=alias_name).select_related("version").first()
    if held is None:
        raise MlflowError(400, f"Registered model alias {message.alias} not found.")
    return _version_answer(held.version)


# ---------------------------------------------------------------------- model versions


@endpoint("POST", message=m.CreateModelVersion)
def version_create(request, user, team, message):
    model = model_of(team, message.name)
    tags = tags_in(message.tags)
    run = source_check(team, message.source, message.run_id or "", message.model_id or "", tags)
    if message.run_id and run is None and message.run_id.isdigit():
        run_of(team, message.run_id)  # another team's run is not one here
    with transaction.atomic():
        version = catalog.version_record(
            model=model,
            source=message.source,
            by=user,
            run=run,
            run_ref=message.run_id or "",
            run_link=message.run_link or "",
            logged_model_id=message.model_id or "",
            tags=tags,
            description=message.description or "",
        )
        if message.model_id and tags.get(PROMPT_TAG) != "true":
            logged_models.registered_as(
                team=team,
                model_id=message.model_id,
                name=model.name,
                version=version.number,
                by=user,
            )
    return _version_answer(version)


@endpoint("GET", message=m.VersionRef)
def version_get(request, user, team, message):
    return _version_answer(version_of(team, message.name, message.version))


@endpoint("PATCH", "POST", message=m.UpdateModelVersion)
def version_update(request, user, team, message):
    version = version_of(team, message.name, message.version)
    if message.description is not None:
        version = catalog.version_change(version=version, by=user, description=message.description)
    return _version_answer(version)


@endpoint("DELETE", message=m.VersionRef)
def version_delete(request, user, team, message):
    services.version_delete(version=version_of(team, message.name, message.version), by=user)
    return JsonResponse({})


@endpoint("GET", "POST", message=m.SearchModelVersions)
def version_search(request, user, team, message):
    rows = list(versions_with_aliases(ModelVersion.objects.filter(registered_model__team=team)))
    rows = search.filtered(rows, message.filter, search.VERSION_FIELDS)
    rows = search.ordered(
        rows,
        message.order_by,
        search.VERSION_ORDER,
        [("name", True), ("version_number", False)],
    )
    chunk, token = search.page(rows, message.max_results, message.page_token)
    out = {"model_versions": [version_json(v) for v in chunk]}
    if token:
        out["next_page_token"] = token
    return JsonResponse(out)


@endpoint("POST", message=m.VersionTag)
def version_tag_set(request, user, team, message):
    version = version_of(team, message.name, message.version)
    catalog.version_change(version=version, by=user, set_tags=tags_in([message]))
    return JsonResponse({})


@endpoint("DELETE", message=m.VersionTagDelete)
def version_tag_delete(request, user, team, message):
    version = version_of(team, message.name, message.version)
    catalog.version_change(version=version, by=user, delete=message.key)
    return JsonResponse({})


@endpoint("GET", message=m.VersionRef)
def version_download_uri(request, user, team, message):
    version = version_of(team, message.name, message.version)
    return JsonResponse({"artifact_uri": version_json(version)["source"]})


@endpoint("GET", message=m.VersionArtifact)
def version_artifact(request, user, team, message):
    """MLflow's model-versions/get-artifact: one file of a version that holds files."""
    path = artifacts.safe_path(message.path or "")  # first, as MLflow's server checks it
    version = version_of(team, message.name, message.version)
    if not version.artifact_path:
        raise MlflowError(404, f"{version} holds no files (its source is {version.source})")
    try:
        return FileResponse(artifact_tree.open_file(version.artifacts, version.artifact_path, path))
    except ServiceError as exc:
        raise MlflowError(404, exc.detail) from None


@endpoint("POST", message=m.TransitionStage)
def version_stage(request, user, team, message):
    """MLflow's stages are deprecated: kept as a field, with no meaning here."""
    version = version_of(team, message.name, message.version)
    stage = {s.lower(): s for s in STAGES}.get(message.stage.lower())
    if stage is None:
        raise MlflowError(
            400,
            f"Invalid Model Version stage: {message.stage}. Value must be one of "
            f"{', '.join(STAGES)}.",
        )
    with transaction.atomic():
        if message.archive_existing_versions:
            if stage not in ("Staging", "Production"):
                raise MlflowError(
                    400,
                    f"Model version transition cannot archive existing model versions because "
                    f"'{stage}' is not an Active stage. Valid stages are Staging, Production",
                )
            others = version.registered_model.versions.filter(stage=stage).exclude(pk=version.pk)
            for other in others:
                catalog.version_change(version=other, by=user, stage="Archived")
        version = catalog.version_change(version=version, by=user, stage=stage)
    return _version_answer(version)
