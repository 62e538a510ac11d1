"""/mlflow's logged models (MLflow 3: logged-models create, get, finalize, delete, search,
params, tags, artifacts), run inputs and outputs (runs/log-inputs, runs/outputs), the
datasets search, and metrics logged against a model: MLflow's shapes over
experiments.logged_models."""

import itertools

from django.http import FileResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from experiments import artifact_tree, logged_models, run_files
from experiments.mlflow import artifacts, model_search
from experiments.mlflow import model_messages as mm
from experiments.mlflow.protocol import MlflowError, endpoint, experiment_of, ms, run_of
from experiments.models import LoggedModel, LoggedModelMetric, RunModelLink
from finetune_hub.errors import ServiceError

STATUS_OUT = {
    LoggedModel.Status.PENDING: "LOGGED_MODEL_PENDING",
    LoggedModel.Status.READY: "LOGGED_MODEL_READY",
    LoggedModel.Status.FAILED: "LOGGED_MODEL_UPLOAD_FAILED",
}
STATUS_IN = {v: k for k, v in STATUS_OUT.items()}
MAX_DATASET_EXPERIMENTS = 20  # MLflow's per-request limit of search-datasets


def _pairs(values: dict) -> list[dict]:
    return [{"key": k, "value": v} for k, v in values.items()]


def artifact_uri(model: LoggedModel) -> str:
    return f"mlflow-artifacts:/{model.experiment_id}/models/{model.pk}/artifacts"


def metric_json(x) -> dict:
    out = {"key": x.key, "value": x.value, "timestamp": x.timestamp, "step": x.step}
    out["model_id"] = x.model_id
    if x.run_id:
        out["run_id"] = str(x.run_id)
    if x.dataset_name:
        out["dataset_name"] = x.dataset_name
    if x.dataset_digest:
        out["dataset_digest"] = x.dataset_digest
    return out


def model_json(model: LoggedModel) -> dict:
    rows = getattr(model, "metric_rows", None)
    rows = list(model.metrics.all()) if rows is None else rows
    info = {
        "model_id": model.pk,
        "experiment_id": str(model.experiment_id),
        "name": model.name,
        "creation_timestamp_ms": ms(model.created_at),
        "last_updated_timestamp_ms": ms(model.updated_at),
        "artifact_uri": artifact_uri(model),
        "status": STATUS_OUT[model.status],
        "creator_id": model.created_by_id,
        "tags": _pairs(model.tags),
    }
    for name in ("model_type", "source_run_id", "status_message"):
        if getattr(model, name):
            info[name] = getattr(model, name)
    return {
        "info": info,
        "data": {"params": _pairs(model.params), "metrics": [metric_json(x) for x in rows]},
    }


def run_io_json(run) -> dict:
    """A run's "inputs" (datasets and models it read) and "outputs" (models it wrote)."""
    links = list(run.model_links.all())
    return {
        "inputs": {
            "dataset_inputs": [
                {
                    "tags": [{"key": k, "value": v} for k, v in d.tags],
                    "dataset": {
                        "name": d.name,
                        "digest": d.digest,
                        "source_type": d.source_type,
                        "source": d.source,
                        **({"schema": d.schema} if d.schema else {}),
                        **({"profile": d.profile} if d.profile else {}),
                    },
                }
                for d in run.dataset_inputs.all()
            ],
            "model_inputs": [
                {"model_id": x.model_id}
                for x in links
                if x.direction == RunModelLink.Direction.INPUT
            ],
        },
        "outputs": {
            "model_outputs": [
                {"model_id": x.model_id, "step": x.step}
                for x in links
                if x.direction == RunModelLink.Direction.OUTPUT
            ]
        },
    }


def metrics_link(run, user, metrics) -> None:
    """The metrics of a log-metric or log-batch that name a logged model (non-finite values
    are kept out, as the run's curves keep them out)."""
    now = ms(timezone.now())
    logged_models.metrics_link(
        run=run,
        by=user,
        metrics=[
            {
                "model_id": m.model_id,
                "key": m.key,
                "value": m.value,
                "timestamp": m.timestamp if m.timestamp is not None else now,
                "step": m.step,
                "dataset_name": m.dataset_name,
                "dataset_digest": m.dataset_digest,
            }
            for m in metrics
            if m.model_id and m.value is not None
        ],
    )


def _model(team, model_id: str, allow_deleted: bool = False) -> LoggedModel:
    return logged_models.model_get(team=team, model_id=model_id, allow_deleted=allow_deleted)


# ---------------------------------------------------------------------- handlers


@endpoint("POST", message=mm.CreateLoggedModel)
def model_create(request, user, team, message):
    model = logged_models.model_create(
        experiment=experiment_of(team, message.experiment_id, user),
        by=user,
        name=message.name or "",
        model_type=message.model_type or "",
        source_run_id=message.source_run_id or "",
        params={p.key: p.value for p in message.params},
        tags={t.key: t.value for t in message.tags},
    )
    return JsonResponse({"model": model_json(model)})


@endpoint("GET", message=mm.GetLoggedModel)
def _model_get(request, user, team, message, model_id):
    allow_deleted = (message.allow_deleted or "").lower() == "true"
    return JsonResponse({"model": model_json(_model(team, model_id, allow_deleted))})


@endpoint("PATCH", message=mm.FinalizeLoggedModel)
def _model_finalize(request, user, team, message, model_id):
    if message.status not in STATUS_IN:
        raise MlflowError(400, f"Invalid value {message.status[:40]!r} for parameter 'status'")
    model = logged_models.model_finalize(
        model=_model(team, model_id), status=STATUS_IN[message.status], by=user
    )
    return JsonResponse({"model": model_json(model)})


@endpoint("DELETE")
def _model_delete(request, user, team, message, model_id):
    logged_models.model_delete(model=_model(team, model_id), by=user)
    return JsonResponse({})


@csrf_exempt
def model(request, model_id, team_id=None):
    """GET a model, PATCH (finalize) it, DELETE it: one route, MLflow's three calls."""
    handler = {"PATCH": _model_finalize, "DELETE": _model_delete}.get(request.method, _model_get)
    return handler(request, team_id=team_id, model_id=model_id)


@endpoint("POST", message=mm.LogLoggedModelParams)
def model_params(request, user, team, message, model_id):
    logged_models.params_log(
        model=_model(team, model_id), params={p.key: p.value for p in message.params}, by=user
    )
    return JsonResponse({})


@endpoint("PATCH", message=mm.SetLoggedModelTags)
def model_tags(request, user, team, message, model_id):
    logged_models.tags_set(
        model=_model(team, model_id), tags={t.key: t.value for t in message.tags}, by=user
    )
    return JsonResponse({})


@endpoint("DELETE")
def model_tag_delete(request, user, team, message, model_id, tag_key):
    logged_models.tag_delete(model=_model(team, model_id), key=tag_key, by=user)
    return JsonResponse({})


@endpoint("POST", message=mm.SearchLoggedModels)
def model_search_view(request, user, team, message):
    experiments = _experiments(team, user, message.experiment_ids)
    models = list(
        LoggedModel.objects.filter(experiment__in=experiments, deleted=False)
        .select_related("created_by")
        .order_by("-created_at", "pk")[: model_search.MAX_SCANNED]
    )
    _with_metrics(models)
    found, token = model_search.page(models, message)
    out = {"models": [model_json(m) for m in found]}
    if token:
        out["next_page_token"] = token
    return JsonResponse(out)


def _experiments(team, user, ids) -> list:
    out = []
    for experiment_id in ids:
        try:
            out.append(experiment_of(team, str(experiment_id), user))
        except MlflowError:
            continue  # a search over an experiment that is not there finds nothing in it
    return out


def _with_metrics(models: list) -> None:
    by_model = {m.pk: m for m in models}
    for m in models:
        m.metric_rows = []
    for x in LoggedModelMetric.objects.filter(model__in=list(by_model)).order_by("pk"):
        by_model[x.model_id].metric_rows.append(x)


@endpoint("GET", message=mm.ListLoggedModelArtifacts)
def model_artifact_list(request, user, team, message, model_id):
    model = _model(team, model_id)
    directory = artifact_tree.path_checked(
        message.artifact_directory_path, "artifact_directory_path", folder=True
    )
    files = artifact_tree.listing(model.files, model.folder, directory)
    return JsonResponse({"root_uri": artifact_uri(model), "files": files})


@endpoint("GET", message=mm.GetLoggedModelArtifact)
def model_artifact_get(request, user, team, message, model_id):
    if not message.artifact_file_path:
        raise MlflowError(
            400, 'Request must include the "artifact_file_path" query parameter.', "BAD_REQUEST"
        )
    model = _model(team, model_id)
    path = artifact_tree.path_checked(message.artifact_file_path, "artifact_file_path")
    return FileResponse(artifact_tree.open_file(model.files, model.folder, path))


# ---------------------------------------------------------------------- run inputs, outputs


@endpoint("POST", message=mm.LogInputs)
def log_inputs(request, user, team, message):
    datasets = [
        {
            **d.dataset.model_dump(exclude={"schema_"}),
            "schema": d.dataset.schema_,
            "tags": [(t.key, t.value) for t in d.tags],
        }
        for d in message.datasets
    ]
    logged_models.inputs_log(
        run=run_of(team, message.run_id),
        datasets=datasets,
        model_ids=[m.model_id for m in message.models],
        by=user,
    )
    return JsonResponse({})


@endpoint("POST", message=mm.LogOutputs)
def log_outputs(request, user, team, message):
    logged_models.outputs_log(
        run=run_of(team, message.run_id),
        outputs=[(m.model_id, m.step) for m in message.models],
        by=user,
    )
    return JsonResponse({})


@endpoint("POST", message=mm.SearchDatasets)
def search_datasets(request, user, team, message):
    ids = message.experiment_ids
    if not ids:
        raise MlflowError(400, "SearchDatasets request must specify at least one experiment_id.")
    if len(ids) > MAX_DATASET_EXPERIMENTS:
        raise MlflowError(
            400,
            f"SearchDatasets request cannot specify more than {MAX_DATASET_EXPERIMENTS} "
            f"experiment_ids. Received {len(ids)} experiment_ids.",
        )
    summaries = logged_models.dataset_summaries(experiments=_experiments(team, user, ids))
    return JsonResponse({"dataset_summaries": summaries})


# ---------------------------------------------------------------------- the UI's upload


@endpoint("POST", message=mm.UploadArtifact)
def upload_artifact(request, user, team, message):
    """MLflow's UI upload (ajax-api/2.0/mlflow/upload-artifact?run_uuid=&path=, the body the
    file), into the run's tree."""
    if not message.run_uuid:
        raise MlflowError(400, "Request must specify run_uuid.")
    if not message.path:
        raise MlflowError(400, "Request must specify path.")
    run = run_of(team, message.run_uuid)
    path = artifact_tree.path_checked(message.path)
    chunks = run_files.chunks(request)  # streamed, never read whole
    first = next(chunks, b"")
    if not first:
        raise MlflowError(400, "Request must specify data.")
    run_files.artifact_put(
        run=run, name=path, chunks=itertools.chain([first], chunks), by=user, tree=True
    )
    return JsonResponse({})


@endpoint("GET", message=mm.UploadArtifact)
def get_artifact(request, user, team, message):
    """MLflow's UI download (get-artifact?run_uuid=&path=)."""
    run = run_of(team, message.run_uuid or message.run_id or "")
    path = artifacts.safe_path(message.path or "")
    try:
        return FileResponse(artifact_tree.open_file(run.output_files, run.files_folder, path))
    except ServiceError as exc:
        raise MlflowError(404, exc.detail) from None
