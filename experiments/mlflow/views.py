"""The HTTP handlers of /mlflow: each takes MLflow's request (protocol.endpoint: the token,
the team, the request message of experiments.mlflow.messages, validated), calls the
tracked-run services or a search, and answers MLflow's shape."""

from django.db import transaction
from django.http import FileResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from experiments import lifecycle, tracked
from experiments.mlflow import artifacts, logged_models, scope, search
from experiments.mlflow import messages as m
from experiments.mlflow.protocol import (
    BASE_MODEL_TAG,
    RUN_NAME_TAG,
    STATUS_IN,
    USER_TAG,
    MlflowError,
    endpoint,
    experiment_json,
    experiment_of,
    ms,
    offset_of,
    points_in,
    run_json,
    run_of,
    run_of_message,
    tags_in,
    time_in,
    value_out,
)
from experiments.models import Experiment, MetricPoint

# ---------------------------------------------------------------------- experiments


@endpoint("GET", message=m.GetExperimentByName)
def experiment_get_by_name(request, user, team, message):
    name = message.experiment_name
    if name == lifecycle.DEFAULT_NAME:
        lifecycle.experiment_default(team=team, by=user)
    found = Experiment.objects.filter(team=team, name=name).first()
    if found is None:
        raise MlflowError(404, f"Could not find experiment with name '{name[:200]}'")
    return JsonResponse({"experiment": experiment_json(found)})


@endpoint("GET", message=m.GetExperiment)
def experiment_get(request, user, team, message):
    experiment = experiment_of(team, message.experiment_id, user)
    return JsonResponse({"experiment": experiment_json(experiment)})


@endpoint("POST", message=m.CreateExperiment)
def experiment_create(request, user, team, message):
    name = message.name
    if Experiment.objects.filter(team=team, name=name).exists():
        raise MlflowError(
            400, f"Experiment '{name[:200]}' already exists", "RESOURCE_ALREADY_EXISTS"
        )
    experiment = lifecycle.experiment_create(
        team=team,
        name=name,
        by=user,
        tags=tags_in(message.tags),
        artifact_location=message.artifact_location or "",
    )
    return JsonResponse({"experiment_id": str(experiment.pk)})


@endpoint("GET", "POST", message=m.SearchExperiments)
def experiment_search(request, user, team, message):
    return JsonResponse(search.experiments_page(user, team, message))


# ---------------------------------------------------------------------- runs


@endpoint("POST", message=m.CreateRun)
def run_create(request, user, team, message):
    experiment = experiment_of(team, message.experiment_id or "0", user)
    tags = tags_in(message.tags)
    name = message.run_name or tags.pop(RUN_NAME_TAG, "")
    tags.pop(RUN_NAME_TAG, None)
    if experiment.deleted_at is not None:
        raise MlflowError(
            400,
            f"The experiment {message.experiment_id} must be in the 'active' "
            "state. Current state is deleted.",
        )
    run = tracked.run_start(
        mlflow_user=message.user_id or tags.get(USER_TAG) or "unknown",
        experiment=experiment,
        by=user,
        name=name[:200],
        tags=tags,
        base_model=tags.get(BASE_MODEL_TAG, ""),
        started_at=time_in(message.start_time),
    )
    return JsonResponse({"run": run_json(run, [])})


@endpoint("POST", message=m.UpdateRun)
def run_update(request, user, team, message):
    run = run_of_message(team, message)
    status = message.status
    if status is not None and status not in STATUS_IN:
        raise MlflowError(400, f"status: one of {', '.join(STATUS_IN)}")
    run = tracked.run_end(
        run=run,
        status=STATUS_IN[status] if status else run.status,
        by=user,
        ended_at=time_in(message.end_time),
        name=message.run_name[:200] if message.run_name else None,
    )
    return JsonResponse({"run_info": run_json(run, [])["info"]})


@endpoint("GET", message=m.GetRun)
def run_get(request, user, team, message):
    run = run_of_message(team, message)
    return JsonResponse({"run": {**run_json(run), **logged_models.run_io_json(run)}})


@endpoint("POST", message=m.SearchRuns)
def run_search(request, user, team, message):
    return JsonResponse(search.runs_page(user, team, message))


def _log(run, user, metrics=None, params=None, tags=None) -> None:
    """One log-batch in one transaction: the services check each part as they write it, and
    a bad item anywhere rolls back the whole batch."""
    if len(metrics or ()) > tracked.MAX_BATCH_POINTS:
        raise MlflowError(400, f"At most {tracked.MAX_BATCH_POINTS} metrics a batch")
    tags = tags_in(tags or [])
    name = tags.pop(RUN_NAME_TAG, None)
    points = points_in(metrics or [])
    values = {p.key: p.value for p in params or []}
    with transaction.atomic():
        if values:
            tracked.params_log(run=run, params=values, by=user)
        if tags:
            tracked.tags_set(run=run, tags=tags, by=user)
        if name:
            tracked.run_end(run=run, status=run.status, by=user, name=str(name)[:200])
        if points:
            tracked.points_log(run=run, points=points, by=user, mlflow=True)
        logged_models.metrics_link(run, user, metrics or [])


@endpoint("POST", message=m.LogBatch)
def log_batch(request, user, team, message):
    run = run_of(team, message.run_id)
    _log(run, user, metrics=message.metrics, params=message.params, tags=message.tags)
    return JsonResponse({})


@endpoint("POST", message=m.LogMetric)
def log_metric(request, user, team, message):
    _log(run_of_message(team, message), user, metrics=[message])
    return JsonResponse({})


@endpoint("POST", message=m.LogParam)
def log_parameter(request, user, team, message):
    _log(run_of_message(team, message), user, params=[message])
    return JsonResponse({})


@endpoint("POST", message=m.SetTag)
def set_tag(request, user, team, message):
    _log(run_of_message(team, message), user, tags=[message])
    return JsonResponse({})


@endpoint("GET", message=m.GetMetricHistory)
def metric_history(request, user, team, message):
    run = run_of_message(team, message)
    key = message.metric_key
    limit = message.max_results
    offset = offset_of(message.page_token)
    rows = list(
        MetricPoint.objects.filter(run=run, key=key)
        .order_by("step", "pk")
        .values_list("step", "value", "timestamp")[offset : offset + limit + 1]
    )
    stamp = ms(run.started_at or run.queued_at)
    out = {
        "metrics": [
            {
                "key": key,
                "value": value_out(v),
                "timestamp": t if t is not None else stamp,
                "step": s,
            }
            for s, v, t in rows[:limit]
        ]
    }
    if len(rows) > limit:
        out["next_page_token"] = str(offset + limit)
    return JsonResponse(out)


# ---------------------------------------------------------------------- artifacts


@endpoint("GET", "PUT")
def artifact(request, user, team, message, path=""):
    """PUT a file (at its path in the run's or logged model's tree), GET one back."""
    owner, rest = artifacts.artifact_owner(team, path)
    if request.method == "PUT":
        artifacts.artifact_put(owner, rest, request, user)
        return JsonResponse({})
    return FileResponse(artifacts.artifact_file(owner, rest))


@endpoint("GET")
def artifact_list(request, user, team, message):
    owner, rest = artifacts.artifact_owner(team, request.GET.get("path", ""))
    return JsonResponse({"files": artifacts.artifact_files(owner, rest)})


@endpoint("GET", message=m.ListArtifacts)
def run_artifact_list(request, user, team, message):
    """MLflow's artifacts/list (the client's list_artifacts of a run when its artifact URI
    is not proxied): one directory of the run's tree."""
    run = run_of_message(team, message)
    files = artifacts.run_listing(run, message.path or "")
    return JsonResponse({"root_uri": run_json(run, [])["info"]["artifact_uri"], "files": files})


@csrf_exempt
def not_supported(request, team_id=None, rest=""):
    return MlflowError(404, scope.not_supported_message(rest), "ENDPOINT_NOT_FOUND").response()
