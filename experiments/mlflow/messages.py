"""MLflow's request messages as typed models, after MLflow's REST API (its protobuf service:
ids and names are strings, tags and params lists of {key, value}, max_results an int32,
times in ms and steps int64, a metric's value a double): each endpoint's body or query is
validated into one of these before any service code runs, and a bad shape is MLflow's
INVALID_PARAMETER_VALUE (400) naming the parameter. Numbers and strings are read by the one
parser of client values (finetune_hub.bounds); what a value means (a key's characters, a
step's range, a run's status) stays the services' to check."""

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from experiments.run_filter import MAX_LENGTH as MAX_FILTER
from finetune_hub.bounds import Int64, NotFinite, Text, TimeMs, as_float, shown


def _id_text(value):
    """MLflow's ids are strings; a client may write one as a JSON number."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _scalar_text(value):
    """A param's or tag's value is a string; a number or boolean is written as its text."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if isinstance(value, int | float) else value


def _metric_value(value) -> float | None:
    """A double, or MLflow's JSON for one that is not finite ("NaN", "Infinity"); None for
    a value that is not finite (kept out of the curves, not refused: see tracked)."""
    if value in ("NaN", "Infinity", "-Infinity"):
        return None
    try:
        return as_float(value)
    except NotFinite:
        return None


ObjectId = Annotated[Text(64), BeforeValidator(_id_text)]
Key = Text(250)
Name = Text(500)
Value = Annotated[Text(), BeforeValidator(_scalar_text)]
MaxResults = Annotated[Int64, Field(ge=1, le=50_000)]
PageToken = Text(64)
MetricValue = Annotated[float | None, BeforeValidator(_metric_value)]


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
    timestamp: TimeMs | None = None
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
    view_type: Name | None = None


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
    run_view_type: Name | None = None
    max_results: MaxResults = 1000
    order_by: list[Name] = []
    page_token: PageToken | None = None


class LogBatch(Message):
    run_id: ObjectId
    metrics: list[Metric] = []
    params: list[KeyValue] = []
    tags: list[KeyValue] = []


class LogMetric(RunRef, Metric):
    pass


class LogParam(RunRef, KeyValue):
    pass


class SetTag(RunRef, KeyValue):
    pass


class GetMetricHistory(RunRef):
    metric_key: Key
    page_token: PageToken | None = None
    max_results: MaxResults = 25_000


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


def problem(exc: ValidationError) -> str:
    """The first error, in MLflow's words, naming the parameter (metrics[0].value)."""
    error = exc.errors(include_url=False)[0]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
    where = where.lstrip(".") or "body"
    if error["type"] == "missing":
        return f"Missing value for required parameter '{where}'"
    reason = error["msg"].removeprefix("Value error, ")
    return f"Invalid value {shown(error.get('input'))} for parameter '{where}' supplied: {reason}"
