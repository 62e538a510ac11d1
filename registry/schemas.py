"""What the registry API takes and answers (registry.api)."""

from datetime import datetime
from typing import Any

from ninja import Schema

from finetune_hub.bounds import Id, Int64
from registry.policy import Policy


class ModelIn(Schema):
    team: Id
    name: str
    description: str = ""
    policy: Policy | None = None


class VersionIn(Schema):
    run: Id
    description: str = ""


class PromoteIn(Schema):
    version: Id
    reason: str


class RollbackIn(Schema):
    reason: str
    # The holder the caller saw: a 409 instead of a second move when the alias moved since.
    from_version: Id | None = None


class ScheduleIn(Schema):
    every_days: Int64 | None = None


class GenerateIn(Schema):
    prompt: str | None = None
    messages: list[dict] | None = None
    max_new_tokens: Int64 = 128


class FeedbackIn(Schema):
    generation: Id
    rating: Int64
    comment: str = ""


class ModelOut(Schema):
    id: int
    team: int
    name: str
    policy: dict[str, Any]  # as stored (registry.policy.Policy's fields)


class ModelListOut(Schema):
    id: int
    team: int
    name: str
    aliases: dict[str, int]  # alias -> version number


class PolicyOut(Schema):
    name: str
    policy: Policy


class ScheduleOut(Schema):
    name: str
    retrain_every_days: int | None


class DataVersionOut(Schema):
    dataset: int
    number: int


class ModelVersionOut(Schema):
    model: str
    number: int
    run: int | None  # None: registered through MLflow from a source that is not a run here
    kind: str  # adapter or full; empty: no files here (not servable)
    source: str = ""  # the MLflow source URI, when registered through MLflow
    base_model: str
    base_model_info: dict[str, Any]
    dataset_version: DataVersionOut | None  # None: a tracked run, trained elsewhere
    artifacts: dict[str, str]  # file name -> sha256
    aliases: list[str]
    created_by: str
    created_at: datetime


class VersionNameOut(Schema):
    model: str
    number: int


class LineageRunOut(Schema):
    id: int
    status: str
    attempt: int
    source: str  # queued (trained here) or tracked (trained elsewhere)
    name: str
    steps: int
    finished_at: datetime | None
    peak_memory_bytes: int | None


class LineageExperimentOut(Schema):
    id: int
    name: str
    technique: str
    hyperparameters: dict[str, Any]


class LineageDataOut(Schema):
    dataset: int
    name: str
    number: int
    sha256: str
    message: str
    annotation: dict[str, int] | None  # examples by annotation status, for a published draft
    published_by: str | None
    published_at: datetime | None


class LineageOut(Schema):
    model_version: VersionNameOut
    run: LineageRunOut | None
    experiment: LineageExperimentOut | None
    source: str = ""
    base_model: dict[str, Any]  # ref, and how it was resolved (path, hash or revision, dtype)
    dataset_versions: list[LineageDataOut]  # the version trained on, then its parents


class VersionEvaluationOut(Schema):
    id: int
    dataset: str
    number: int
    split: str
    results: dict[str, dict[str, Any]]


class ModelVersionDetailOut(ModelVersionOut):
    lineage: LineageOut
    evaluations: list[VersionEvaluationOut]


class AliasEventOut(Schema):
    sequence: int
    alias: str
    action: str
    from_version: int | None
    to_version: int | None  # None: the alias was removed (MLflow's delete alias)
    actor: str
    approved_by: str | None
    reason: str
    evidence: dict[str, Any]
    time: datetime


class PromotionRequestOut(Schema):
    request: int
    status: str
    alias: str
    version: int
    requested_by: str
    reason: str
    decided_by: str | None


class AliasAtOut(Schema):
    alias: str
    time: datetime
    version: int | None
    event: AliasEventOut | None


class GenerationOut(Schema):
    generation: int
    alias: str
    version: int
    output: str
    latency_ms: float


class FeedbackOut(Schema):
    feedback: int
    version: int
    rating: int


class FeedbackCountOut(Schema):
    version: int
    up: int
    down: int
