"""MLflow's side of the wire: the bearer token and team of the tracking URI, request
arguments, the JSON shapes of experiments and runs, and errors in MLflow's shape,
{"error_code": ..., "message": ...}, with MLflow's statuses."""

import json
import re
from datetime import UTC, datetime
from functools import wraps

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from experiments import tracked
from experiments.models import Experiment, MetricSeries, TrainingRun
from finetune_hub.auth import bearer_api_token
from finetune_hub.bounds import json_loads
from finetune_hub.errors import NotFound, ServiceError
from finetune_hub.models import ApiToken, Team
from finetune_hub.selectors import membership_require, mlflow_team

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
                token = _token(request)
                user = token.user
                team = _team(token, team_id)
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


def _token(request) -> ApiToken:
    token = bearer_api_token(request)
    if token is None:
        raise MlflowError(401, "A bearer token is required (MLFLOW_TRACKING_TOKEN)")
    return token


def _team(token: ApiToken, team_id) -> Team:
    """The team of /mlflow/teams/<id>; under plain /mlflow, the token's team, else the
    user's default team, else their only team (finetune_hub.selectors.mlflow_team)."""
    if team_id is not None:
        try:
            return membership_require(user=token.user, team=team_id).team
        except NotFound:
            raise MlflowError(404, "No such team") from None
    team = mlflow_team(user=token.user, token=token)
    if team is None:
        raise MlflowError(
            400,
            "This token's user is in several teams (or none): choose a default team on the "
            "API tokens page, bind the token to a team, or use /mlflow/teams/<team id> as the "
            "tracking URI",
        )
    return team


def arg(source: dict, name: str, required: bool = True) -> str:
    value = source.get(name)
    if value in (None, "") and required:
        raise MlflowError(400, f"Missing value for required parameter '{name}'")
    if value is not None and not isinstance(value, str | int):
        raise MlflowError(400, f"'{name}' must be a string")
    return "" if value is None else str(value)


def object_id(text: str, name: str) -> int:
    if not re.fullmatch(r"[1-9][0-9]{0,17}", text or ""):
        raise MlflowError(404, f"No {name} with id {text[:40]!r}")
    return int(text)


def time_in(ms):
    """MLflow's milliseconds since the epoch (a number or its text); None when absent or
    out of range, and the server's clock is used."""
    if isinstance(ms, int | str) and str(ms).isdigit() and 0 < int(ms) < 2**53:
        return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)
    return None


def ms(dt) -> int | None:
    return int(dt.timestamp() * 1000) if dt else None


def limit_of(value, default: int) -> int:
    try:
        limit = int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        raise MlflowError(400, "max_results: a positive integer") from None
    if not 1 <= limit <= 50_000:
        raise MlflowError(400, "max_results: from 1 to 50000")
    return limit


def offset_of(token) -> int:
    if token in (None, ""):
        return 0
    if not isinstance(token, str) or not token.isdigit() or len(token) > 12:
        raise MlflowError(400, "Invalid page_token")
    return int(token)


# ---------------------------------------------------------------------- experiments


def experiment_json(e: Experiment) -> dict:
    return {
        "experiment_id": str(e.pk),
        "name": e.name,
        "artifact_location": f"mlflow-artifacts:/{e.pk}",
        "lifecycle_stage": "active",
        "creation_time": ms(e.created_at),
        "last_update_time": ms(e.created_at),
        "tags": [{"key": "finetune_hub.tracked", "value": str(e.tracked).lower()}],
    }


def experiment_of(team: Team, experiment_id: str, user=None) -> Experiment:
    """The team's experiment by its MLflow id; "0" is MLflow's default experiment (made
    when a user writes to it)."""
    if experiment_id == "0":  # MLflow's default experiment, when none was set
        if user is None:
            found = Experiment.objects.filter(team=team, name=DEFAULT_EXPERIMENT).first()
            if found is None:
                raise MlflowError(404, "No experiment with id 0")
            return found
        return tracked.project_for(team=team, name=DEFAULT_EXPERIMENT, by=user)
    found = Experiment.objects.filter(team=team, pk=object_id(experiment_id, "experiment")).first()
    if found is None:
        raise MlflowError(404, f"No experiment with id {experiment_id}")
    return found


# ---------------------------------------------------------------------- runs


def run_of(team: Team, run_id: str) -> TrainingRun:
    found = (
        TrainingRun.objects.select_related("experiment__team", "created_by")
        .filter(experiment__team=team, pk=object_id(run_id, "run"))
        .first()
    )
    if found is None:
        raise MlflowError(404, f"Run '{run_id[:40]}' not found")
    return found


def run_json(run: TrainingRun, series: list | None = None) -> dict:
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
    stamp = ms(run.heartbeat_at or run.started_at or run.queued_at)
    return {
        "info": {
            "run_id": str(run.pk),
            "run_uuid": str(run.pk),
            "run_name": run.name or f"run-{run.pk}",
            "experiment_id": str(run.experiment_id),
            "user_id": run.created_by.username,
            "status": STATUS_OUT[run.status],
            "start_time": ms(run.started_at or run.queued_at),
            "end_time": ms(run.finished_at),
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


def tags_in(items) -> dict:
    if not isinstance(items, list):
        raise MlflowError(400, "tags: a list of {key, value}")
    out = {}
    for i, tag in enumerate(items):
        if not isinstance(tag, dict) or not isinstance(tag.get("key"), str):
            raise MlflowError(400, f"tags[{i}]: an object with key and value")
        out[tag["key"]] = str(tag.get("value", ""))
    return out


def metric_in(item, i: int) -> tuple[int, str, float, int | None] | None:
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
