"""The HTTP handlers of /mlflow: each takes MLflow's request (protocol.endpoint: the token,
the team, the JSON body), calls the tracked-run services or a search, and answers MLflow's
shape."""

from django.db import transaction
from django.http import FileResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from experiments import tracked
from experiments.mlflow import artifacts, search
from experiments.mlflow.protocol import (
    BASE_MODEL_TAG,
    HISTORY_PAGE,
    RUN_NAME_TAG,
    STATUS_IN,
    MlflowError,
    arg,
    endpoint,
    experiment_json,
    experiment_of,
    limit_of,
    metric_in,
    ms,
    offset_of,
    run_json,
    run_of,
    tags_in,
    time_in,
)
from experiments.models import Experiment, MetricPoint

# ---------------------------------------------------------------------- experiments


@endpoint("GET")
def experiment_get_by_name(request, user, team, body):
    name = arg(request.GET, "experiment_name")
    found = Experiment.objects.filter(team=team, name=name).first()
    if found is None:
        raise MlflowError(404, f"Could not find experiment with name '{name[:200]}'")
    return JsonResponse({"experiment": experiment_json(found)})


@endpoint("GET")
def experiment_get(request, user, team, body):
    experiment = experiment_of(team, arg(request.GET, "experiment_id"))
    return JsonResponse({"experiment": experiment_json(experiment)})


@endpoint("POST")
def experiment_create(request, user, team, body):
    name = arg(body, "name")
    if Experiment.objects.filter(team=team, name=name).exists():
        raise MlflowError(
            400, f"Experiment '{name[:200]}' already exists", "RESOURCE_ALREADY_EXISTS"
        )
    experiment = tracked.project_for(team=team, name=name, by=user)
    return JsonResponse({"experiment_id": str(experiment.pk)})


@endpoint("GET", "POST")
def experiment_search(request, user, team, body):
    source = body if request.method == "POST" else request.GET
    return JsonResponse(search.experiments_page(team, source))


# ---------------------------------------------------------------------- runs


@endpoint("POST")
def run_create(request, user, team, body):
    experiment = experiment_of(team, arg(body, "experiment_id", required=False) or "0", user)
    tags = tags_in(body.get("tags") or [])
    name = arg(body, "run_name", required=False) or tags.pop(RUN_NAME_TAG, "")
    tags.pop(RUN_NAME_TAG, None)
    run = tracked.run_start(
        experiment=experiment,
        by=user,
        name=name[:200],
        tags=tags,
        base_model=tags.get(BASE_MODEL_TAG, ""),
        started_at=time_in(body.get("start_time")),
    )
    return JsonResponse({"run": run_json(run, [])})


@endpoint("POST")
def run_update(request, user, team, body):
    run = run_of(team, arg(body, "run_id", required=False) or arg(body, "run_uuid"))
    status = body.get("status")
    if status is not None and status not in STATUS_IN:
        raise MlflowError(400, f"status: one of {', '.join(STATUS_IN)}")
    name = body.get("run_name")
    run = tracked.run_end(
        run=run,
        status=STATUS_IN[status] if status else run.status,
        by=user,
        ended_at=time_in(body.get("end_time")),
        name=name[:200] if isinstance(name, str) and name else None,
    )
    return JsonResponse({"run_info": run_json(run, [])["info"]})


@endpoint("GET")
def run_get(request, user, team, body):
    return JsonResponse({"run": run_json(run_of(team, arg(request.GET, "run_id")))})


@endpoint("POST")
def run_search(request, user, team, body):
    return JsonResponse(search.runs_page(user, team, body))


def _log(run, user, metrics=None, params=None, tags=None) -> None:
    """One log-batch in one transaction: the services check each part as they write it, and
    a bad item anywhere rolls back the whole batch."""
    metrics = [] if metrics is None else metrics
    params = [] if params is None else params
    tags = [] if tags is None else tags
    if not isinstance(metrics, list):
        raise MlflowError(400, "metrics: a list of {key, value, timestamp, step}")
    if not isinstance(params, list) or not all(isinstance(p, dict) for p in params):
        raise MlflowError(400, "params: a list of {key, value}")
    if len(metrics) > tracked.MAX_BATCH_POINTS:
        raise MlflowError(400, f"At most {tracked.MAX_BATCH_POINTS} metrics a batch")
    tags = tags_in(tags)
    name = tags.pop(RUN_NAME_TAG, None)
    points = [p for i, m in enumerate(metrics) if (p := metric_in(m, i)) is not None]
    values = {p.get("key"): str(p.get("value", "")) for p in params}
    with transaction.atomic():
        if values:
            tracked.params_log(run=run, params=values, by=user)
        if tags:
            tracked.tags_set(run=run, tags=tags, by=user)
        if name:
            tracked.run_end(run=run, status=run.status, by=user, name=str(name)[:200])
        if points:
            tracked.points_log(run=run, points=points, by=user)


@endpoint("POST")
def log_batch(request, user, team, body):
    run = run_of(team, arg(body, "run_id"))
    _log(
        run,
        user,
        metrics=body.get("metrics") or [],
        params=body.get("params") or [],
        tags=body.get("tags") or [],
    )
    return JsonResponse({})


@endpoint("POST")
def log_metric(request, user, team, body):
    run = run_of(team, arg(body, "run_id", required=False) or arg(body, "run_uuid"))
    _log(run, user, metrics=[body])
    return JsonResponse({})


@endpoint("POST")
def log_parameter(request, user, team, body):
    run = run_of(team, arg(body, "run_id", required=False) or arg(body, "run_uuid"))
    _log(run, user, params=[{"key": arg(body, "key"), "value": body.get("value", "")}])
    return JsonResponse({})


@endpoint("POST")
def set_tag(request, user, team, body):
    run = run_of(team, arg(body, "run_id", required=False) or arg(body, "run_uuid"))
    _log(run, user, tags=[{"key": arg(body, "key"), "value": body.get("value", "")}])
    return JsonResponse({})


@endpoint("GET")
def metric_history(request, user, team, body):
    run = run_of(team, arg(request.GET, "run_id", required=False) or arg(request.GET, "run_uuid"))
    key = arg(request.GET, "metric_key")
    limit = limit_of(request.GET.get("max_results"), HISTORY_PAGE)
    offset = offset_of(request.GET.get("page_token"))
    rows = list(
        MetricPoint.objects.filter(run=run, key=key)
        .order_by("step", "pk")
        .values_list("step", "value", "timestamp")[offset : offset + limit + 1]
    )
    stamp = ms(run.started_at or run.queued_at)
    out = {
        "metrics": [
            {"key": key, "value": v, "timestamp": t if t is not None else stamp, "step": s}
            for s, v, t in rows[:limit]
        ]
    }
    if len(rows) > limit:
        out["next_page_token"] = str(offset + limit)
    return JsonResponse(out)


# ---------------------------------------------------------------------- artifacts


@endpoint("GET", "PUT")
def artifact(request, user, team, body, path=""):
    """PUT a file (stored by its file name in the run's output folder), GET one back."""
    run, rest = artifacts.artifact_run(team, path)
    if request.method == "PUT":
        artifacts.artifact_put(run, rest, request, user)
        return JsonResponse({})
    return FileResponse(artifacts.artifact_file(run, rest))


@endpoint("GET")
def artifact_list(request, user, team, body):
    run, rest = artifacts.artifact_run(team, request.GET.get("path", ""))
    return JsonResponse({"files": artifacts.artifact_files(run, rest)})


@csrf_exempt
def not_supported(request, team_id=None, rest=""):
    return MlflowError(
        404,
        f"This MLflow endpoint is not supported by finetune_hub: {rest[:100]}",
        "ENDPOINT_NOT_FOUND",
    ).response()
