"""The request messages of MLflow's logged models, run inputs and outputs, and dataset
search (experiments.mlflow.logged_models), after MLflow's service.proto, with the same
readers as experiments.mlflow.messages."""

from typing import Annotated, ClassVar

from pydantic import BeforeValidator, Field

from experiments.mlflow.messages import (
    Key,
    KeyValue,
    Message,
    Name,
    ObjectId,
    PageToken,
    Value,
)
from experiments.run_filter import MAX_LENGTH as MAX_FILTER
from finetune_hub.bounds import Int64, Text, as_int

MAX_ITEMS = 1000
ModelId = Text(64)
LongText = Text(1 << 20)


def _status(value):
    """LoggedModelStatus by its enum name (MLflow's JSON) or its number."""
    names = {1: "LOGGED_MODEL_PENDING", 2: "LOGGED_MODEL_READY", 3: "LOGGED_MODEL_UPLOAD_FAILED"}
    if isinstance(value, int) and not isinstance(value, bool):
        return names.get(value, value)
    if isinstance(value, str) and value.isdigit() and len(value) < 3:
        return names.get(as_int(value), value)
    return value


Status = Annotated[Text(40), BeforeValidator(_status)]


class CreateLoggedModel(Message):
    experiment_id: ObjectId
    name: Name | None = None
    model_type: Name | None = None
    source_run_id: ObjectId | None = None
    params: Annotated[list[KeyValue], Field(max_length=MAX_ITEMS)] = []
    tags: Annotated[list[KeyValue], Field(max_length=MAX_ITEMS)] = []


class LogLoggedModelParams(Message):
    params: Annotated[list[KeyValue], Field(max_length=MAX_ITEMS)] = []


class GetLoggedModel(Message):
    allow_deleted: Text(10) | None = None


class FinalizeLoggedModel(Message):
    status: Status


class SetLoggedModelTags(Message):
    tags: Annotated[list[KeyValue], Field(max_length=MAX_ITEMS)] = []


class DatasetRef(Message):
    dataset_name: Name
    dataset_digest: Name | None = None


class OrderBy(Message):
    field_name: Name
    ascending: bool = True
    dataset_name: Name | None = None
    dataset_digest: Name | None = None


class SearchLoggedModels(Message):
    experiment_ids: Annotated[list[ObjectId], Field(min_length=1, max_length=MAX_ITEMS)]
    filter: Text(MAX_FILTER) | None = None
    datasets: Annotated[list[DatasetRef], Field(max_length=100)] = []
    max_results: Annotated[Int64, Field(ge=1, le=MAX_ITEMS)] = 100
    order_by: Annotated[list[OrderBy], Field(max_length=20)] = []
    page_token: PageToken | None = None


class InputTag(Message):
    key: Key
    value: Value = ""


class Dataset(Message):
    name: Name | None = None
    digest: Name | None = None
    source_type: Name | None = None
    source: LongText | None = None
    schema_: LongText | None = Field(None, alias="schema")  # not BaseModel.schema
    profile: LongText | None = None


class DatasetInput(Message):
    tags: Annotated[list[InputTag], Field(max_length=100)] = []
    dataset: Dataset


class ModelInput(Message):
    model_id: ModelId


class ModelOutput(Message):
    model_id: ModelId
    step: Int64 = 0


class LogInputs(Message):
    run_id: ObjectId
    datasets: Annotated[list[DatasetInput], Field(max_length=MAX_ITEMS)] = []
    models: Annotated[list[ModelInput], Field(max_length=MAX_ITEMS)] = []


class LogOutputs(Message):
    run_id: ObjectId
    models: Annotated[list[ModelOutput], Field(min_length=1, max_length=MAX_ITEMS)]


class SearchDatasets(Message):
    experiment_ids: list = []


class ListLoggedModelArtifacts(Message):
    artifact_directory_path: Text(500) | None = None


class GetLoggedModelArtifact(Message):
    artifact_file_path: Text(500) | None = None


class UploadArtifact(Message):
    in_query: ClassVar[bool] = True  # the body is the file; the fields are in the query
    run_uuid: ObjectId | None = None
    run_id: ObjectId | None = None  # the UI's download names the run either way
    path: Text(500) | None = None
