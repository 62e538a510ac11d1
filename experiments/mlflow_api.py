"""An MLflow-compatible REST subset under /mlflow, so code that already reports to MLflow
(mlflow.log_metric, a Hugging Face Trainer with report_to="mlflow") reports to finetune_hub
unchanged: MLFLOW_TRACKING_URI=http://<host>/mlflow and MLFLOW_TRACKING_TOKEN=<api token>.

The tracking URI picks the team: /mlflow serves the token user's only team;
/mlflow/teams/<id> one team of a user who is in several. Experiments are the team's
experiments (made as tracked projects by experiments/create), runs its runs, queued ones
included: the rules are experiments.tracked's, the same as the native tracked-run API.

Errors answer MLflow's shape, {"error_code": ..., "message": ...}, with MLflow's statuses.
Artifacts: the mlflow-artifacts calls store a run's files flat in its output folder with the
artifact root's rules (weights as safetensors only; see experiments.tracked), whatever
artifact_path they were logged under."""

import json
import re
from datetime import UTC, datetime
from functools import wraps

from django.db import transaction
from django.http import FileResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from experiments import selectors, tracked
from experiments.models import Experiment, MetricPoint, MetricSeries, TrainingRun
from finetune_hub.auth import token_user
from finetune_hub.bounds import json_loads
from finetune_hub.errors import ServiceError
from finetune_hub.models import Membership, Team
from finetune_hub.storage import artifact_path

STATUS_IN = {
    "RUNNING": TrainingRun.Status.RUNNING,
    "FINISHED": TrainingRun.Status.SUCCEEDED,
    "FAILED": TrainingRun.Status.FAILED,
    "KILLED": TrainingRun.Status.CANCELLED,
}
STATUS_OUT = {
    TrainingRun.Status.QUEUED: "SCHEDULED",
    TrainingRun.Status.RUNNING: "RUNNING",
    TrainingRun.Status.SUCCEEDED: "FINISHED",
    TrainingRun.Status.FAILED: "FAILED",
    TrainingRun.Status.CANCELLED: "KILLED",
}
DEFAULT_EXPERIMENT = "Default"  # MLflow's experiment 0
MAX_RESULTS = 1000
HISTORY_PAGE = 25_000
RUN_NAME_TAG = "mlflow.runName"
BASE_MODEL_TAG = "finetune_hub.base_model"


class MlflowError(Exception):
    CODES = {
        400: "INVALID_PARAMETER_VALUE",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "RESOURCE_DOES_NOT_EXIST",
        409: "INVALID_STATE",
        413: "INVALID_PARAMETER_VALUE",
        422: "INVALID_PARAMETER_VALUE",
        429: "REQUEST_LIMIT_EXCEEDED",
    }
    STATUS = {"INVALID_PARAMETER_VALUE": 400, "INVALID_STATE": 400}

    def __init__(self, status: int, message: str, code: str | None = None):
        self.code = code or self.CODES.get(status, "BAD_REQUEST")
        self.status = self.STATUS.get(self.code, status) if status in (409, 422) else status
        self.message = message

    def response(self) -> JsonResponse:
        return JsonResponse({"error_code": self.code, "message": self.message}, status=self.status)


def endpoint(*methods):
    """Bearer token, the team of the tracking URI, JSON in, MLflow's error shape out."""

    def wrap(view):
        @csrf_exempt
        @wraps(view)
        def wrapped(request, team_id=None, **kwargs):
            try:
                if request.method not in methods:
                    raise MlflowError(405, f"{request.method} is not allowed here", "BAD_REQUEST")
                user = _user(request)
                team = _team(user, team_id)
                body = {}
                if request.method == "POST":
                    try:
                        body = json_loads(request.body or b"{}")
                    except ValueError:
                        raise MlflowError(400, "The body is not valid JSON") from None
                    if not isinstance(body, dict):
                        raise MlflowError(400, "The body is a JSON object")
                return view(request, user, team, body, **kwargs)
            except MlflowError as exc:
                return exc.response()
            except ServiceError as exc:
                return MlflowError(exc.status, exc.detail).response()

        return wrapped

    return wrap


def _user(request):
    header = request.headers.get("Authorization", "")
    user = token_user(header[7:]) if header.startswith("Bearer ") else None
    if user is None:
        raise MlflowError(401, "A bearer token is required (MLFLOW_TRACKING_TOKEN)")
    return user


def _team(user, team_id) -> Team:
    if team_id is not None:
        membership = Membership.objects.filter(user=user, team_id=team_id).first()
        if membership is None:
            raise MlflowError(404, "No such team")
        return membership.team
    teams = list(Team.objects.filter(memberships__user=user)[:2])
    if len(teams) != 1:
        raise MlflowError(
            400,
            "This token's user is in several teams (or none): use /mlflow/teams/<team id> "
            "as the tracking URI",
        )
    return teams[0]


def _arg(source: dict, name: str, required: bool = True) -> str:
    value = source.get(name)
    if value in (None, "") and required:
        raise MlflowError(400, f"Missing value for required parameter '{name}'")
    if value is not None and not isinstance(value, str | int):
        raise MlflowError(400, f"'{name}' must be a string")
    return "" if value is None else str(value)


def _id(text: str, name: str) -> int:
    if not re.fullmatch(r"[1-9][0-9]{0,17}", text or ""):
        raise MlflowError(404, f"No {name} with id {text[:40]!r}")
    return int(text)


def _time(ms):
    """MLflow's milliseconds since the epoch (a number or its text); None when absent or
    out of range, and the server's clock is used."""
    if isinstance(ms, int | str) and str(ms).isdigit() and 0 < int(ms) < 2**53:
        return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)
    return None


def _ms(dt) -> int | None:
    return int(dt.timestamp() * 1000) if dt else None


# ---------------------------------------------------------------------- experiments


def _experiment_json(e: Experiment) -> dict:
    return {
        "experiment_id": str(e.pk),
        "name": e.name,
        "artifact_location": f"mlflow-artifacts:/{e.pk}",
        "lifecycle_stage": "active",
        "creation_time": _ms(e.created_at),
        "last_update_time": _ms(e.created_at),
        "tags": [{"key": "finetune_hub.tracked", "value": str(e.tracked).lower()}],
    }


def _experiment(team: Team, experiment_id: str, user=None) -> Experiment:
    if experiment_id == "0":  # MLflow's default experiment, when none was set
        if user is None:
            found = Experiment.objects.filter(team=team, name=DEFAULT_EXPERIMENT).first()
            if found is None:
                raise MlflowError(404, "No experiment with id 0")
            return found
        return tracked.project_for(team=team, name=DEFAULT_EXPERIMENT, by=user)
    found = Experiment.objects.filter(team=team, pk=_id(experiment_id, "experiment")).first()
    if found is None:
        raise MlflowError(404, f"No experiment with id {experiment_id}")
    return found


@endpoint("GET")
def experiment_get_by_name(request, user, team, body):
    name = _arg(request.GET, "experiment_name")
    found = Experiment.objects.filter(team=team, name=name).first()
    if found is None:
        raise MlflowError(404, f"Could not find experiment with name '{name[:200]}'")
    return JsonResponse({"experiment": _experiment_json(found)})


@endpoint("GET")
def experiment_get(request, user, team, body):
    experiment = _experiment(team, _arg(request.GET, "experiment_id"))
    return JsonResponse({"experiment": _experiment_json(experiment)})


@endpoint("POST")
def experiment_create(request, user, team, body):
    name = _arg(body, "name")
    if Experiment.objects.filter(team=team, name=name).exists():
        raise MlflowError(
            400, f"Experiment '{name[:200]}' already exists", "RESOURCE_ALREADY_EXISTS"
        )
    experiment = tracked.project_for(team=team, name=name, by=user)
    return JsonResponse({"experiment_id": str(experiment.pk)})


@endpoint("GET", "POST")
def experiment_search(request, user, team, body):
    source = body if request.method == "POST" else request.GET
    limit = _limit(source.get("max_results"), 1000)
    offset = _offset(source.get("page_token"))
    found = list(
        Experiment.objects.filter(team=team).order_by("-created_at", "-pk")[
            offset : offset + limit + 1
        ]
    )
    out = {"experiments": [_experiment_json(e) for e in found[:limit]]}
    if len(found) > limit:
        out["next_page_token"] = str(offset + limit)
    return JsonResponse(out)


# ---------------------------------------------------------------------- runs


def _run(team: Team, run_id: str) -> TrainingRun:
    found = (
        TrainingRun.objects.select_related("experiment__team", "created_by")
        .filter(experiment__team=team, pk=_id(run_id, "run"))
        .first()
    )
    if found is None:
        raise MlflowError(404, f"Run '{run_id[:40]}' not found")
    return found


def _run_json(run: TrainingRun, series: list | None = None) -> dict:
    if series is None:
        series = list(MetricSeries.objects.filter(run=run).exclude(last_step=None))
    params = (
        {**run.experiment.hyperparameters, **run.params}
        if run.tracked
        else {
            **run.experiment.hyperparameters,
            "technique": run.experiment.technique,
            "base_model": run.experiment.base_model,
        }
    )
    tags = {**run.tags, RUN_NAME_TAG: run.name or f"run-{run.pk}"}
    stamp = _ms(run.heartbeat_at or run.started_at or run.queued_at)
    return {
        "info": {
            "run_id": str(run.pk),
            "run_uuid": str(run.pk),
            "run_name": run.name or f"run-{run.pk}",
            "experiment_id": str(run.experiment_id),
            "user_id": run.created_by.username,
            "status": STATUS_OUT[run.status],
            "start_time": _ms(run.started_at or run.queued_at),
            "end_time": _ms(run.finished_at),
            "artifact_uri": f"mlflow-artifacts:/{run.experiment_id}/{run.pk}/artifacts",
            "lifecycle_stage": "active",
        },
        "data": {
            "metrics": [
                {"key": s.key, "value": s.last_value, "timestamp": stamp, "step": s.last_step}
                for s in series
            ],
            "params": [
                {"key": k, "value": v if isinstance(v, str) else json.dumps(v)}
                for k, v in params.items()
            ],
            "tags": [{"key": k, "value": str(v)} for k, v in tags.items()],
        },
        "inputs": {},
    }


def _tags(items) -> dict:
    if not isinstance(items, list):
        raise MlflowError(400, "tags: a list of {key, value}")
    out = {}
    for i, tag in enumerate(items):
        if not isinstance(tag, dict) or not isinstance(tag.get("key"), str):
            raise MlflowError(400, f"tags[{i}]: an object with key and value")
        out[tag["key"]] = str(tag.get("value", ""))
    return out


@endpoint("POST")
def run_create(request, user, team, body):
    experiment = _experiment(team, _arg(body, "experiment_id", required=False) or "0", user)
    tags = _tags(body.get("tags") or [])
    name = _arg(body, "run_name", required=False) or tags.pop(RUN_NAME_TAG, "")
    tags.pop(RUN_NAME_TAG, None)
    run = tracked.run_start(
        experiment=experiment,
        by=user,
        name=name[:200],
        tags=tags,
        base_model=tags.get(BASE_MODEL_TAG, ""),
        started_at=_time(body.get("start_time")),
    )
    return JsonResponse({"run": _run_json(run, [])})


@endpoint("POST")
def run_update(request, user, team, body):
    run = _run(team, _arg(body, "run_id", required=False) or _arg(body, "run_uuid"))
    status = body.get("status")
    if status is not None and status not in STATUS_IN:
        raise MlflowError(400, f"status: one of {', '.join(STATUS_IN)}")
    name = body.get("run_name")
    run = tracked.run_end(
        run=run,
        status=STATUS_IN[status] if status else run.status,
        by=user,
        ended_at=_time(body.get("end_time")),
        name=name[:200] if isinstance(name, str) and name else None,
    )
    return JsonResponse({"run_info": _run_json(run, [])["info"]})


@endpoint("GET")
def run_get(request, user, team, body):
    return JsonResponse({"run": _run_json(_run(team, _arg(request.GET, "run_id")))})


def _limit(value, default: int) -> int:
    try:
        limit = int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        raise MlflowError(400, "max_results: a positive integer") from None
    if not 1 <= limit <= 50_000:
        raise MlflowError(400, "max_results: from 1 to 50000")
    return limit


def _offset(token) -> int:
    if token in (None, ""):
        return 0
    if not isinstance(token, str) or not token.isdigit() or len(token) > 12:
        raise MlflowError(400, "Invalid page_token")
    return int(token)


FILTER_CLAUSE = re.compile(
    r"^\s*(metrics|params|attributes|tags)\.(`[^`]+`|\"[^\"]+\"|[\w.\-/]+)\s*(<=|>=|!=|=|<|>)"
    r"\s*(.+?)\s*$"
)
ORDER = re.compile(r"^\s*(metrics|params|attributes)\.(`[^`]+`|[\w.\-/]+)\s*(ASC|DESC)?\s*$", re.I)
ATTRIBUTE_SORT = {"start_time": "started_at", "end_time": "finished_at", "run_id": "id"}


def _translate_filter(text: str) -> tuple[str, str | None]:
    """MLflow's search filter to the run table's: metrics and params clauses pass (the
    quotes of a param's value go, so that '0.01' compares as the number it was logged as);
    attributes.status selects a status."""
    clauses, status = [], None
    for clause in re.split(r"\s+and\s+", text.strip(), flags=re.I) if text.strip() else []:
        match = FILTER_CLAUSE.match(clause)
        if not match:
            raise MlflowError(400, f"Unsupported filter clause: {clause[:80]!r}")
        kind, name, op, value = match.groups()
        name = name.strip('`"')
        if kind == "attributes":
            if name != "status" or op != "=":
                raise MlflowError(400, "Only attributes.status = '<STATUS>' is supported")
            raw = value.strip("'\"")
            if raw not in STATUS_IN:
                raise MlflowError(400, f"attributes.status: one of {', '.join(STATUS_IN)}")
            status = STATUS_IN[raw]
            continue
        if kind == "tags":
            raise MlflowError(400, "Filtering on tags is not supported")
        if kind == "params":
            value = value.strip("'\"")
        clauses.append(f"{kind}.{name} {op} {value}")
    return " and ".join(clauses), status


@endpoint("POST")
def run_search(request, user, team, body):
    ids = body.get("experiment_ids") or []
    if not isinstance(ids, list) or not all(isinstance(i, str | int) for i in ids):
        raise MlflowError(400, "experiment_ids: a list of experiment ids")
    experiments = [_experiment(team, str(i)).pk for i in ids]
    filter_text, status = _translate_filter(str(body.get("filter") or ""))
    order = body.get("order_by") or []
    sort = "-queued_at"
    if order:
        match = ORDER.match(str(order[0]))
        if not match:
            raise MlflowError(400, f"Unsupported order_by: {str(order[0])[:80]!r}")
        kind, name, direction = match.groups()
        name = name.strip("`")
        column = ATTRIBUTE_SORT.get(name) if kind == "attributes" else f"{kind}.{name}"
        if column is None:
            raise MlflowError(400, f"Unsupported order_by attribute: {name[:40]}")
        sort = ("-" if (direction or "ASC").upper() == "DESC" else "") + column
    runs = selectors.run_table(user=user, filter=filter_text, sort=sort, status=status)
    runs = runs.filter(experiment__team=team)
    if experiments:
        runs = runs.filter(experiment_id__in=experiments)
    limit = _limit(body.get("max_results"), MAX_RESULTS)
    offset = _offset(body.get("page_token"))
    page = list(runs.select_related("created_by")[offset : offset + limit + 1])
    series: dict[int, list] = {}
    for s in (
        MetricSeries.objects.filter(run__in=page[:limit])
        .exclude(last_step=None)
        .only("run_id", "key", "last_step", "last_value")
    ):
        series.setdefault(s.run_id, []).append(s)
    out = {"runs": [_run_json(r, series.get(r.pk, [])) for r in page[:limit]]}
    if len(page) > limit:
        out["next_page_token"] = str(offset + limit)
    return JsonResponse(out)


def _metric(item, i: int) -> tuple[int, str, float, int | None] | None:
    """An MLflow metric as a point; None for a value that is not finite (MLflow keeps NaN,
    finite_hub's curves do not: it is dropped, not refused, so training never stops for it)."""
    if not isinstance(item, dict):
        raise MlflowError(400, f"metrics[{i}]: an object with key, value, timestamp, step")
    value = item.get("value")
    if isinstance(value, str):
        if value in ("NaN", "Infinity", "-Infinity"):
            return None
        try:
            value = float(value)
        except ValueError:
            raise MlflowError(400, f"metrics[{i}].value: a number") from None
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        return None
    step, stamp = item.get("step", 0), item.get("timestamp")
    try:
        step = int(step or 0)
        stamp = int(stamp) if stamp not in (None, "") else None
    except (TypeError, ValueError):
        raise MlflowError(400, f"metrics[{i}]: step and timestamp are integers") from None
    return (step, item.get("key"), value, stamp)


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
    tags = _tags(tags)
    name = tags.pop(RUN_NAME_TAG, None)
    points = [p for i, m in enumerate(metrics) if (p := _metric(m, i)) is not None]
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
    run = _run(team, _arg(body, "run_id"))
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
    run = _run(team, _arg(body, "run_id", required=False) or _arg(body, "run_uuid"))
    _log(run, user, metrics=[body])
    return JsonResponse({})


@endpoint("POST")
def log_parameter(request, user, team, body):
    run = _run(team, _arg(body, "run_id", required=False) or _arg(body, "run_uuid"))
    _log(run, user, params=[{"key": _arg(body, "key"), "value": body.get("value", "")}])
    return JsonResponse({})


@endpoint("POST")
def set_tag(request, user, team, body):
    run = _run(team, _arg(body, "run_id", required=False) or _arg(body, "run_uuid"))
    _log(run, user, tags=[{"key": _arg(body, "key"), "value": body.get("value", "")}])
    return JsonResponse({})


@endpoint("GET")
def metric_history(request, user, team, body):
    run = _run(team, _arg(request.GET, "run_id", required=False) or _arg(request.GET, "run_uuid"))
    key = _arg(request.GET, "metric_key")
    limit = _limit(request.GET.get("max_results"), HISTORY_PAGE)
    offset = _offset(request.GET.get("page_token"))
    rows = list(
        MetricPoint.objects.filter(run=run, key=key)
        .order_by("step", "pk")
        .values_list("step", "value", "timestamp")[offset : offset + limit + 1]
    )
    stamp = _ms(run.started_at or run.queued_at)
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

ARTIFACT_PATH = re.compile(r"^(\d{1,18})/(\d{1,18})/artifacts(?:/(.*))?$")


def _artifact_run(team: Team, path: str) -> tuple[TrainingRun, str]:
    match = ARTIFACT_PATH.match(path or "")
    if not match:
        raise MlflowError(404, "No such artifact location")
    experiment_id, run_id, rest = match.groups()
    run = _run(team, run_id)
    if str(run.experiment_id) != experiment_id:
        raise MlflowError(404, "No such artifact location")
    return run, rest or ""


@endpoint("GET", "PUT")
def artifact(request, user, team, body, path=""):
    """PUT a file (stored by its file name in the run's output folder), GET one back."""
    run, rest = _artifact_run(team, path)
    name = rest.rsplit("/", 1)[-1]
    if request.method == "PUT":
        tracked.artifact_put(run=run, name=name, chunks=tracked.chunks(request), by=user)
        return JsonResponse({})
    if name not in run.output_files:
        raise MlflowError(404, f"No artifact {name[:100]!r}")
    return FileResponse(open(artifact_path(f"{run.output_path}/{name}"), "rb"))  # noqa: SIM115


@endpoint("GET")
def artifact_list(request, user, team, body):
    run, rest = _artifact_run(team, request.GET.get("path", ""))
    if rest:
        return JsonResponse({"files": []})
    files = [
        {"path": name, "is_dir": False, "file_size": _size(run, name)}
        for name in sorted(run.output_files)
    ]
    return JsonResponse({"files": files})


def _size(run: TrainingRun, name: str) -> int:
    try:
        return artifact_path(f"{run.output_path}/{name}").stat().st_size
    except OSError:
        return 0


@csrf_exempt
def not_supported(request, team_id=None, rest=""):
    return MlflowError(
        404,
        f"This MLflow endpoint is not supported by finetune_hub: {rest[:100]}",
        "ENDPOINT_NOT_FOUND",
    ).response()
