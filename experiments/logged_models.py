"""Logged models (MLflow 3's LoggedModel) and a run's inputs and outputs: the services that
write them and the reads the MLflow adapter and the dashboard share. A logged model belongs
to its experiment's team; every write checks the writer is a member, every read is scoped by
the caller's team (another team's model does not exist)."""

import json
import uuid

from django.db import IntegrityError, transaction
from django.db.models import Q

from experiments import artifact_tree
from experiments.models import (
    Experiment,
    LoggedModel,
    LoggedModelMetric,
    RunDataset,
    RunModelLink,
    TrainingRun,
)
from experiments.tracked import MAX_VALUE_CHARS, PARAM_KEY, writable_require
from finetune_hub.errors import NotFound, invalid
from finetune_hub.models import Role, Team
from finetune_hub.selectors import get_visible, membership_require
from finetune_hub.storage import move_into_place

MAX_ENTRIES = 1000  # params or tags of one model
MAX_TEXT = 500  # a name, a model type, a dataset's name or digest
MAX_DATASET_TEXT = 1 << 20  # a dataset's source, schema or profile (MLflow's are JSON text)
MAX_INPUTS = 1000  # datasets and models in one log-inputs call


def _text(value, field: str, limit: int = MAX_TEXT) -> str:
    text = "" if value is None else value
    if not isinstance(text, str) or len(text) > limit:
        raise invalid(f"{field}: a string of at most {limit} characters", field=field)
    return text


def entries_checked(values: dict, field: str) -> dict:
    """Params or tags: name -> text, names by the tracked runs' rule."""
    if len(values) > MAX_ENTRIES:
        raise invalid(f"{field}: at most {MAX_ENTRIES} entries", field=field)
    for key, value in values.items():
        if not isinstance(key, str) or not PARAM_KEY.match(key):
            raise invalid(
                f"{field}: {str(key)[:60]!r} is not a valid name (letters, digits, _ . - / : "
                "and spaces, at most 250 characters)",
                field=f"{field}.{str(key)[:60]}",
            )
        _text(value, f"{field}.{key}", MAX_VALUE_CHARS)
    return dict(values)


# ---------------------------------------------------------------------- models


def model_create(
    *,
    experiment: Experiment,
    by,
    name: str = "",
    model_type: str = "",
    source_run_id: str = "",
    params: dict | None = None,
    tags: dict | None = None,
) -> LoggedModel:
    membership_require(user=by, team=experiment.team, role=Role.MEMBER)
    model_id = f"m-{uuid.uuid4().hex}"
    return LoggedModel.objects.create(
        id=model_id,
        experiment=experiment,
        name=_text(name, "name") or f"model-{model_id[2:10]}",
        model_type=_text(model_type, "model_type"),
        source_run_id=_text(source_run_id, "source_run_id", 64),
        params=entries_checked(params or {}, "params"),
        tags=entries_checked(tags or {}, "tags"),
        created_by=by,
    )


def model_get(*, team: Team, model_id: str, allow_deleted: bool = False) -> LoggedModel:
    found = (
        LoggedModel.objects.select_related("experiment", "created_by")
        .filter(experiment__team=team, pk=str(model_id)[:34])
        .first()
    )
    if found is None or (found.deleted and not allow_deleted):
        raise NotFound(f"Logged model with ID '{str(model_id)[:40]}' not found.")
    return found


def _update(model: LoggedModel, by, **changes) -> LoggedModel:
    """One model's fields changed under its row lock (two writers never lose an update)."""
    membership_require(user=by, team=model.experiment.team, role=Role.MEMBER)
    with transaction.atomic():
        locked = LoggedModel.objects.select_for_update().get(pk=model.pk)
        for name, change in changes.items():
            setattr(locked, name, change(getattr(locked, name)))
        locked.save(update_fields=[*changes, "updated_at"])
    locked.experiment = model.experiment
    return locked


def params_log(*, model: LoggedModel, params: dict, by) -> LoggedModel:
    params = entries_checked(params, "params")
    return _update(model, by, params=lambda old: entries_checked({**old, **params}, "params"))


def tags_set(*, model: LoggedModel, tags: dict, by) -> LoggedModel:
    tags = entries_checked(tags, "tags")
    return _update(model, by, tags=lambda old: entries_checked({**old, **tags}, "tags"))


MODEL_VERSIONS_TAG = "mlflow.modelVersions"  # the registry versions made from a model


def registered_as(*, team: Team, model_id: str, name: str, version: int, by) -> None:
    """Notes on a logged model that a registry version was made from it (MLflow's
    mlflow.modelVersions tag, a JSON list of {name, version}); a model id that names no
    logged model of the team is only text on the version, and nothing is noted."""
    try:
        model = model_get(team=team, model_id=model_id)
    except NotFound:
        return
    entry = {"name": name, "version": version}

    def noted(tags: dict) -> dict:
        try:
            versions = json.loads(tags.get(MODEL_VERSIONS_TAG, "[]"))
        except ValueError:
            versions = []
        if not isinstance(versions, list):
            versions = []
        if entry not in versions:
            versions.append(entry)
        return {**tags, MODEL_VERSIONS_TAG: json.dumps(versions)}

    _update(model, by, tags=noted)


def tag_delete(*, model: LoggedModel, key: str, by) -> LoggedModel:
    if key not in model.tags:
        raise NotFound(f"No tag with key {key[:250]!r} found for model with ID {model.pk!r}.")
    return _update(model, by, tags=lambda old: {k: v for k, v in old.items() if k != key})


def model_finalize(*, model: LoggedModel, status: str, by) -> LoggedModel:
    if status not in LoggedModel.Status.values:
        raise invalid(f"status: one of {', '.join(LoggedModel.Status.values)}", field="status")
    return _update(model, by, status=lambda old: status)


def model_delete(*, model: LoggedModel, by) -> None:
    """Kept (its metrics and links stay readable with allow_deleted), no longer listed."""
    _update(model, by, deleted=lambda old: True)


def artifact_put(*, model: LoggedModel, path: str, chunks, by) -> LoggedModel:
    """One file of the model's tree (artifact_tree's rules: any name but a pickle, bounded,
    written once, visible only whole)."""
    membership_require(user=by, team=model.experiment.team, role=Role.MEMBER)
    path = artifact_tree.path_checked(path)
    artifact_tree.collision_require(model.files, path)
    with artifact_tree.received(chunks, path, allow_empty=True) as (partial, digest):
        with transaction.atomic():
            locked = LoggedModel.objects.select_for_update().get(pk=model.pk)
            artifact_tree.collision_require(locked.files, path)
            artifact_tree.unlinked(f"{locked.folder}/{path}")
            move_into_place(partial, f"{locked.folder}/{path}")
            locked.files = {**locked.files, path: digest}
            locked.save(update_fields=["files", "updated_at"])
    return locked


def metrics_link(*, run: TrainingRun, metrics: list[dict], by) -> None:
    """Metrics a run logged against logged models (each with its model_id, the dataset it was
    measured on): the model must be its team's."""
    if not metrics:
        return
    team = run.experiment.team
    ids = {m["model_id"] for m in metrics}
    models = {i: model_get(team=team, model_id=i) for i in ids}
    LoggedModelMetric.objects.bulk_create(
        LoggedModelMetric(
            model=models[m["model_id"]],
            run=run,
            key=m["key"],
            value=m["value"],
            timestamp=m["timestamp"],
            step=m["step"],
            dataset_name=_text(m.get("dataset_name"), "dataset_name"),
            dataset_digest=_text(m.get("dataset_digest"), "dataset_digest"),
        )
        for m in metrics
    )


# ---------------------------------------------------------------------- run inputs, outputs


def _link(run: TrainingRun, model: LoggedModel, direction: str, step: int = 0) -> None:
    RunModelLink.objects.update_or_create(
        run=run, model=model, direction=direction, defaults={"step": step}
    )


def inputs_log(*, run: TrainingRun, datasets: list[dict], model_ids: list[str], by) -> None:
    """The datasets a run read (each once per run by name and digest: a second log of the
    same one keeps the first) and the logged models it read."""
    writable_require(run, by)
    if len(datasets) + len(model_ids) > MAX_INPUTS:
        raise invalid(f"At most {MAX_INPUTS} inputs a call", field="datasets")
    team = run.experiment.team
    models = [model_get(team=team, model_id=m) for m in model_ids]
    rows = [_dataset_row(run, d, i) for i, d in enumerate(datasets)]
    with transaction.atomic():
        for row in rows:
            try:
                with transaction.atomic():
                    row.save()
            except IntegrityError:
                pass  # logged already
        for model in models:
            _link(run, model, RunModelLink.Direction.INPUT)


def _dataset_row(run: TrainingRun, d: dict, i: int) -> RunDataset:
    field = f"datasets[{i}].dataset"
    return RunDataset(
        run=run,
        name=_text(d.get("name"), f"{field}.name") or _missing(f"{field}.name"),
        digest=_text(d.get("digest"), f"{field}.digest") or _missing(f"{field}.digest"),
        source_type=_text(d.get("source_type"), f"{field}.source_type")
        or _missing(f"{field}.source_type"),
        source=_text(d.get("source"), f"{field}.source", MAX_DATASET_TEXT)
        or _missing(f"{field}.source"),
        schema=_text(d.get("schema"), f"{field}.schema", MAX_DATASET_TEXT),
        profile=_text(d.get("profile"), f"{field}.profile", MAX_DATASET_TEXT),
        tags=[
            [_text(k, f"{field}.tags"), _text(v, f"{field}.tags", MAX_TEXT)] for k, v in d["tags"]
        ],
    )


def _missing(field: str):
    raise invalid(f"Missing value for required parameter '{field}'", field=field)


def outputs_log(*, run: TrainingRun, outputs: list[tuple[str, int]], by) -> None:
    """The logged models a run wrote, each at a step."""
    writable_require(run, by)
    team = run.experiment.team
    pairs = [(model_get(team=team, model_id=m), step) for m, step in outputs]
    with transaction.atomic():
        for model, step in pairs:
            _link(run, model, RunModelLink.Direction.OUTPUT, step)


def dataset_summaries(*, experiments: list[Experiment], limit: int = 1000) -> list[dict]:
    """MLflow's dataset summaries: each (experiment, name, digest, context) once."""
    rows = RunDataset.objects.filter(run__experiment__in=experiments).values_list(
        "run__experiment_id", "name", "digest", "tags"
    )
    seen: dict[tuple, None] = {}
    for experiment_id, name, digest, tags in rows.order_by("pk").iterator():
        context = next((v for k, v in tags if k == "mlflow.data.context"), None)
        seen.setdefault((str(experiment_id), name, digest, context), None)
        if len(seen) >= limit:
            break
    return [
        {"experiment_id": e, "name": n, "digest": d, **({"context": c} if c is not None else {})}
        for e, n, d, c in seen
    ]


# ---------------------------------------------------------------------- pages


def models_of_run(run: TrainingRun) -> list[LoggedModel]:
    """The logged models a run made (their source) or wrote (an output), for its page."""
    made = Q(source_run_id=str(run.pk)) | Q(
        run_links__run=run, run_links__direction=RunModelLink.Direction.OUTPUT
    )
    return list(
        LoggedModel.objects.filter(made, experiment=run.experiment, deleted=False)
        .distinct()
        .order_by("created_at", "pk")
    )


def model_visible(*, user, model_id: str) -> LoggedModel:
    """A logged model of one of the user's teams (another team's is not found)."""
    return get_visible(
        LoggedModel.objects.select_related("experiment__team", "created_by").filter(deleted=False),
        user=user,
        team_path="experiment__team",
        what="Logged model",
        pk=str(model_id)[:34],
    )
