"""The registry's MLflow request messages (model_registry.proto), validated before a handler
runs, as experiments.mlflow.messages does for tracking: a bad shape is a 400 naming the
parameter."""

from pydantic import Field

from experiments.mlflow.messages import Key, Message, PageToken
from experiments.run_filter import MAX_LENGTH as MAX_FILTER
from finetune_hub.bounds import Int64, Text

Name = Text(256)
Alias = Text(255)
Version = Text(20)
Description = Text(100_000)
Source = Text(4000)
# MLflow's registry takes tag values up to 100,000 characters (a prompt's text is one); read
# a little past that so the handler can refuse a longer one in MLflow's words.
Value = Text(100_001)  # a string, as the tracking messages' values (MLflow refuses a number)


class KeyValue(Message):
    key: Key
    value: Value = ""


class ModelRef(Message):
    name: Name


class CreateRegisteredModel(ModelRef):
    tags: list[KeyValue] = []
    description: Description | None = None


class RenameRegisteredModel(ModelRef):
    new_name: Name | None = None


class UpdateRegisteredModel(ModelRef):
    description: Description | None = None


class SearchRegisteredModels(Message):
    filter: Text(MAX_FILTER) | None = None
    max_results: Int64 = Field(default=100, ge=1, le=1000)
    order_by: list[Text(500)] = []
    page_token: PageToken | None = None


class SearchModelVersions(SearchRegisteredModels):
    max_results: Int64 = Field(default=10_000, ge=1, le=200_000)


class GetLatestVersions(ModelRef):
    stages: list[Text(20)] = []


class ModelTag(ModelRef):
    key: Key
    value: Value = ""


class ModelTagDelete(ModelRef):
    key: Key


class CreateModelVersion(ModelRef):
    source: Source
    run_id: Text(64) | None = None
    tags: list[KeyValue] = []
    run_link: Text(4000) | None = None
    description: Description | None = None
    model_id: Text(100) | None = None


class VersionRef(ModelRef):
    version: Version


class VersionArtifact(VersionRef):
    path: Text(500) | None = None


class UpdateModelVersion(VersionRef):
    description: Description | None = None


class TransitionStage(VersionRef):
    stage: Text(20)
    archive_existing_versions: bool = False


class VersionTag(VersionRef):
    key: Key
    value: Value = ""


class VersionTagDelete(VersionRef):
    key: Key


class SetAlias(ModelRef):
    alias: Alias
    version: Version


class AliasRef(ModelRef):
    alias: Alias
