"""MLflow's side of the wire: the bearer token and team of the tracking URI, the request
message (experiments.mlflow.messages, validated before the handler runs), the JSON shapes of
experiments and runs, and errors in MLflow's shape, {"error_code": ..., "message": ...},
with MLflow's statuses."""

import json
import re
from datetime import UTC, datetime
from functools import wraps

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from pydantic import ValidationError

from experiments import lifecycle
from experiments.mlflow import messages
from experiments.models import Experiment, MetricSeries, TrainingRun
from finetune_hub.auth import bearer_api_token
from finetune_hub.bounds import as_int, client_value, json_loads
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
RUN_NAME_TAG = "mlflow.runName"
USER_TAG = "mlflow.user"
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


def endpoint(*methods, message: type[messages.Message] = messages.Message):
    """Bearer token, the team of the tracking URI, the request's `message` (from the JSON
    body of a POST, the query string of a GET) validated in, MLflow's error shape out."""

    def wrap(view):
        @csrf_exempt
        @wraps(view)
        def wrapped(request, team_id=None, **kwargs):
            try:
                if request.method not in methods:
                    raise MlflowError(405, f"{request.method} is not allowed here", "BAD_REQUEST")
                token = _token(request)
                team = _team(token, team_id)
                return view(request, token.user, team, _message(request, message), **kwargs)
            except MlflowError as exc:
                return exc.response()
            except ServiceError as exc:
                return MlflowError(exc.status, exc.detail).response()

        wrapped.message = message  # what the fuzz of /mlflow draws requests from
        wrapped.methods = methods
        return wrapped

    return wrap


def _message(request, message: type[messages.Message]) -> messages.Message:
    # MLflow's client sends PATCH's and DELETE's fields as a JSON body too (or none at all);
    # a message `in_query` (an upload: the body is the file) reads the query string.
    in_body = request.method == "POST" or (request.method in ("PATCH", "DELETE") and request.body)
    if in_body and not getattr(message, "in_query", False):
        try:
            body = json_loads(request.body or b"{}")
        except ValueError as exc:
            raise MlflowError(400, f"The body is not valid JSON: {str(exc)[:200]}") from None
        if not isinstance(body, dict):
            raise MlflowError(400, "The body is a JSON object")
    else:
        body = messages.from_query(message, request.GET)
    try:
        return message.model_validate(body)
    except ValidationError as exc:
        raise MlflowError(400, messages.problem(exc)) from None


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


def object_id(text: str, name: str) -> int:
    if not re.fullmatch(r"[1-9][0-9]{0,17}", text or ""):
        if name == "run":
            raise MlflowError(404, f"Run '{text[:40]}' not found")
        raise MlflowError(404, f"No Experiment with id={text[:40]} exists")
    return as_int(text)


def time_in(ms: int | None):
    """MLflow's milliseconds since the epoch (messages.TimeMs: bounded) as a time; None when
    absent or 0, and the server's clock is used."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if ms else None


def ms(dt) -> int | None:
    return int(dt.timestamp() * 1000) if dt else None


def offset_of(token: str | None) -> int:
    """The offset a page_token (the text of one this server gave) names."""
    return client_value(as_int, token or "0", field="page_token", lo=0, hi=10**15)


# ---------------------------------------------------------------------- experiments


def experiment_json(e: Experiment) -> dict:
    """The team's Default experiment is MLflow's "0"; the artifact location is the one the
    client gave, else where this server keeps the experiment's artifacts."""
    return {
        "experiment_id": experiment_mlflow_id(e),
        "name": e.name,
        "artifact_location": e.artifact_location or f"mlflow-artifacts:/{e.pk}",
        "lifecycle_stage": e.lifecycle_stage,
        "creation_time": ms(e.created_at),
        "last_update_time": ms(e.updated_at or e.created_at),
        "tags": [{"key": k, "value": str(v)} for k, v in e.tags.items()],
    }


def experiment_mlflow_id(e: Experiment) -> str:
    return "0" if e.mlflow_default else str(e.pk)


def experiment_of(team: Team, experiment_id: str, user) -> Experiment:
    """The team's experiment by its MLflow id; "0" is the team's Default (made when first
    read: MLflow's server always has one)."""
    if experiment_id == "0":
        return lifecycle.experiment_default(team=team, by=user)
    found = Experiment.objects.filter(team=team, pk=object_id(experiment_id, "experiment")).first()
    if found is None:
        raise MlflowError(404, f"No Experiment with id={experiment_id[:40]} exists")
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


def run_of_message(team: Team, message: messages.RunRef) -> TrainingRun:
    """The run a message names by run_id (or MLflow's older run_uuid), which is required."""
    if not message.run:
        raise MlflowError(400, f"Missing value for required parameter 'run_id'.{messages.API_DOCS}")
    return run_of(team, message.run)


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
            "experiment_id": experiment_mlflow_id(run.experiment),
            "user_id": run.mlflow_user or run.created_by.username,
            "status": STATUS_OUT[run.status],
            "start_time": ms(run.started_at or run.queued_at),
            "end_time": ms(run.finished_at),
            "artifact_uri": f"mlflow-artifacts:/{run.experiment_id}/{run.pk}/artifacts",
            "lifecycle_stage": "deleted" if run.deleted_at else "active",
        },
        "data": {
            "metrics": [
                {
                    "key": s.key,
                    "value": value_out(s.last_value),
                    "timestamp": stamp,
                    "step": s.last_step,
                }
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


def tags_in(items: list[messages.KeyValue]) -> dict:
    return {tag.key: tag.value for tag in items}


def points_in(metrics: list[messages.Metric]) -> list[tuple[int, str, float | None, int | None]]:
    """MLflow metrics as points: NaN is None (stored, returned by MLflow's calls, kept out of
    the dashboard's curves); +-Infinity arrives clamped (messages)."""
    return [(m.step, m.key, m.value, m.timestamp) for m in metrics]


def value_out(value: float | None):
    """A stored metric value as MLflow's JSON writes it: NaN (None here) as "NaN"."""
    return "NaN" if value is None else value
