"""MLflow's request messages as typed models, after MLflow's REST API (its protobuf service:
ids and names are strings, tags and params lists of {key, value}, max_results an int32,
times in ms and steps int64, a metric's value a double): each endpoint's body or query is
validated into one of these before any service code runs, and a bad shape is MLflow's
INVALID_PARAMETER_VALUE (400) naming the parameter. Numbers and strings are read by the one
parser of client values (finetune_hub.bounds); what a value means (a key's characters, a
step's range, a run's status) stays the services' to check."""

import json
import math
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from experiments.run_filter import MAX_LENGTH as MAX_FILTER
from finetune_hub.bounds import Int64, NotFinite, Text, TimeMs, as_float, shown

DOUBLE_MAX = 1.7976931348623157e308  # what MLflow's SQL store keeps for +-Infinity
NOT_FINITE = {"NaN": None, "Infinity": DOUBLE_MAX, "-Infinity": -DOUBLE_MAX}


def _metric_value(value) -> float | None:
    """A double, or MLflow's JSON for one that is not finite: NaN is None (stored as NaN,
    kept out of the curves), +-Infinity is clamped to the largest double, as MLflow's SQL
    store does."""
    if isinstance(value, str) and value in NOT_FINITE:
        return NOT_FINITE[value]
    try:
        return as_float(value)
    except NotFinite:
        if isinstance(value, float) and math.isnan(value):
            return None
        negative = value.lstrip().startswith("-") if isinstance(value, str) else value < 0
        return -DOUBLE_MAX if negative else DOUBLE_MAX


# MLflow's ids and values are strings: a JSON number for one is refused, as MLflow does.
ObjectId = Text(64)
Key = Text(250)
Name = Text(500)
Value = Text()
MaxResults = Annotated[Int64, Field(ge=1, le=50_000)]
PageToken = Text(64)
MetricValue = Annotated[float | None, BeforeValidator(_metric_value)]
ViewType = Literal["ACTIVE_ONLY", "DELETED_ONLY", "ALL"]


class Message(BaseModel):
    # Fields MLflow's clients send that this subset does not use are ignored, as MLflow's
    # server ignores unknown ones.
    model_config = ConfigDict(extra="ignore", frozen=True)


class KeyValue(Message):
    key: Key
    value: Value = ""


class Metric(Message):
    key: Key
    value: MetricValue
    timestamp: TimeMs  # required, as MLflow's server requires it
    step: Int64 = 0
    # MLflow 3: a metric measured on a logged model (experiments.mlflow.logged_models).
    model_id: Text(64) | None = None
    dataset_name: Text(500) | None = None
    dataset_digest: Text(500) | None = None


class RunRef(Message):
    run_id: ObjectId | None = None
    run_uuid: ObjectId | None = None  # MLflow's older name of run_id

    @property
    def run(self) -> str | None:
        return self.run_id or self.run_uuid


class ListArtifacts(RunRef):
    path: Text(500) | None = None
    page_token: PageToken | None = None


class GetExperimentByName(Message):
    experiment_name: Name


class GetExperiment(Message):
    experiment_id: ObjectId


class CreateExperiment(Message):
    name: Name
    artifact_location: Text() | None = None
    tags: list[KeyValue] = []


class SearchExperiments(Message):
    max_results: MaxResults = 1000
    page_token: PageToken | None = None
    filter: Text(MAX_FILTER) | None = None
    order_by: list[Name] = []
    view_type: ViewType | None = None


class CreateRun(Message):
    experiment_id: ObjectId | None = None
    user_id: Name | None = None
    run_name: Name | None = None
    start_time: TimeMs | None = None
    tags: list[KeyValue] = []


class UpdateRun(RunRef):
    status: Literal["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"] | None = None
    end_time: TimeMs | None = None
    run_name: Name | None = None


class GetRun(RunRef):
    pass


class SearchRuns(Message):
    experiment_ids: list[ObjectId] = []
    filter: Text(MAX_FILTER) | None = None
    run_view_type: ViewType | None = None
    max_results: MaxResults = 1000
    order_by: list[Name] = []
    page_token: PageToken | None = None


class LogBatch(Message):
    run_id: ObjectId
    metrics: list[Metric] = []
    params: list[KeyValue] = []
    tags: list[KeyValue] = []


class LogMetric(Metric, RunRef):  # RunRef's fields first: MLflow checks run_id first
    pass


class LogParam(KeyValue, RunRef):
    pass


class SetTag(KeyValue, RunRef):
    pass


class GetMetricHistory(RunRef):
    metric_key: Key
    page_token: PageToken | None = None
    max_results: MaxResults = 25_000


class ExperimentRef(Message):
    experiment_id: ObjectId


class UpdateExperiment(ExperimentRef):
    new_name: Name


class SetExperimentTag(KeyValue, ExperimentRef):
    pass


class DeleteExperimentTag(ExperimentRef):
    key: Key


class DeleteTag(RunRef):
    key: Key


def is_list(model: type[Message], name: str) -> bool:
    """Whether a field is repeated: a query string gives it every value, not the last."""
    return getattr(model.model_fields[name].annotation, "__origin__", None) is list


def from_query(model: type[Message], query) -> dict:
    """A GET request's query string as the message's fields (empty ones left out, as
    MLflow's clients leave out a field at its default)."""
    out = {}
    for name in model.model_fields:
        values = [v for v in query.getlist(name) if v != ""]
        if values:
            out[name] = values if is_list(model, name) else values[-1]
    return out


API_DOCS = " See the API docs for more information about request parameters."


def problem(exc: ValidationError) -> str:
    """The first error in MLflow's words (mlflow.utils.validation.invalid_value: the value as
    JSON, as the client wrote it), naming the parameter (metrics[0].value)."""
    error = exc.errors(include_url=False)[0]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
    where = where.lstrip(".") or "body"
    value = error.get("input")
    if error["type"] == "missing" or value is None:
        return f"Missing value for required parameter '{where}'.{API_DOCS}"
    reason = error["msg"].removeprefix("Value error, ")
    return f"Invalid value {as_json(value)} for parameter '{where}' supplied: {reason}.{API_DOCS}"


def as_json(value, limit: int = 100) -> str:
    """A client's value as MLflow's messages show it (JSON, keys sorted), cut to `limit`."""
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        text = shown(value)
    return text if len(text) <= limit else text[:limit] + "…"
