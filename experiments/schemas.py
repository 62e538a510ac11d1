"""What the experiments and runs API takes and answers (experiments.api)."""

from datetime import datetime
from typing import Any

from ninja import Field, Schema
from pydantic import BaseModel

from datasets_app.schemas import VersionRefOut
from finetune_hub.bounds import Id, Int64, Integer, PageNumber


class VersionRef(Schema):
    dataset: Id
    number: Id


class ExperimentIn(Schema):
    team: Id
    name: str
    dataset_version: Id | VersionRef
    base_model: str = "embedded"
    technique: str
    hyperparameters: dict = {}
    notes: str = ""


class EstimateIn(Schema):
    base_model: str = "embedded"
    technique: str
    hyperparameters: dict = {}
    # With a dataset version, the answer adds the overfitting guard's warnings for that data.
    dataset_version: Id | None = None


class RunIn(Schema):
    priority: Int64 = 0


class PriorityIn(Schema):
    priority: Int64


# The resource estimate on each kind of device ("cuda", "cpu"): bytes by part, and totals.
Estimates = dict[str, dict[str, Any]]


class EstimateOut(Schema):
    hyperparameters: dict[str, Any]
    estimate: Estimates
    warnings: list[str]  # what the guide warns about for these settings on that data


class CheckpointOut(Schema):
    step: int
    path: str


class RunOut(Schema):
    id: int
    experiment: int
    status: str
    priority: int
    attempt: int
    max_attempts: int
    worker: str | None  # host:pid, for site admins only
    step: int
    total_steps: int
    progress: float
    eta_seconds: float | None
    heartbeat_at: datetime | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested: bool
    error: str
    checkpoints: list[CheckpointOut]
    output_path: str | None
    output_files: dict[str, str]  # relative path (a/b.json) -> sha256
    base_model: dict[str, Any]
    peak_memory_bytes: int | None
    stop_reason: str  # why training ended before its last step (early stopping), what was kept
    source: str  # queued (trained by a worker here) or tracked (trained elsewhere)
    name: str
    tags: dict[str, str]
    notes: str
    base_model_name: str  # what the run's output builds on


class ExperimentOut(Schema):
    id: int
    team: int
    name: str
    tracked: bool  # a project of runs trained elsewhere
    dataset_version: VersionRefOut | None
    base_model: str
    technique: str
    hyperparameters: dict[str, Any]
    estimate: Estimates
    notes: str
    created_at: datetime


class ExperimentDetailOut(ExperimentOut):
    runs: list[RunOut]


class SeriesOut(Schema):
    steps: list[int]
    values: list[float]


class OverfittingOut(Schema):
    step: int  # the evaluation after which eval loss kept rising
    message: str


class RunMetricsOut(Schema):
    run: int
    metrics: dict[str, SeriesOut]  # by metric name
    # Eval loss rising while training loss falls (with loss and eval_loss among the keys).
    overfitting: OverfittingOut | None = None


class RunRowOut(RunOut):
    experiment_name: str
    technique: str
    params: dict[str, Any]  # the experiment's hyperparameters, and a tracked run's params
    metrics: dict[str, float | None]  # each asked key's last logged value


class CompareIn(Schema):
    ids: list[Id] = Field(..., min_length=1)
    keys: list[str] | None = Field(None, max_length=50)
    max_points: Integer(2, 1000) = 1000
    page: PageNumber = 1
    limit: Integer(1, 500) = 100


class RunCompareOut(Schema):
    run: RunOut
    metrics: dict[str, SeriesOut]


class LogsOut(Schema):
    run: int
    status: str
    lines: list[str]


class GpuOut(Schema):
    index: int | str  # the host's numbering (or UUID), which CUDA_VISIBLE_DEVICES takes
    name: str
    memory_bytes: int
    memory_free_bytes: int | None  # what other programs left, at the last heartbeat
    busy: bool  # a run holds it
    run: int | None  # that run, when it is one of your teams'


class WorkerOut(Schema):
    # name (host:pid), host and pid for site admins only
    name: str | None
    host: str | None
    pid: int | None
    cuda: bool
    devices: list[dict[str, Any]]
    gpus: list[GpuOut]
    heartbeat_at: datetime


class TrackedRunIn(Schema):
    """A run trained elsewhere: in an experiment of a team, or in a project (an experiment
    made for tracked runs when the team has none of that name)."""

    team: Id
    experiment: Id | None = None
    project: str | None = Field(None, max_length=100)
    name: str = Field("", max_length=200)
    base_model: str = Field("", max_length=500)
    params: dict[str, Any] = {}
    tags: dict[str, Any] = {}


class PointIn(BaseModel):
    # A plain pydantic model: ninja's Schema wraps every object it validates for attribute
    # access (DjangoGetter), a third of a 1,000-point batch's server time.
    step: Int64 = 0
    key: str
    value: float  # tracked.points_log refuses a value that is not finite, naming the point
    timestamp: Int64 | None = None  # milliseconds since the epoch


class PointsIn(Schema):
    points: list[PointIn] = Field(..., max_length=10_000)


class PointsOut(Schema):
    run: int
    written: int


class ParamsIn(Schema):
    params: dict[str, Any]


class TagsIn(Schema):
    tags: dict[str, Any]
    replace: bool = False  # true: these become the run's tags; false: added to them


class NotesIn(Schema):
    notes: str


class RunEndIn(Schema):
    status: str = "succeeded"  # succeeded, failed or cancelled
    error: str = Field("", max_length=10_000)


class ArtifactOut(Schema):
    run: int
    name: str
    sha256: str
    output_path: str


# The shapes out, built from the rows: one function each, used by every route that answers
# a run or an experiment.
def run_out(run, site_admin: bool = False) -> dict:
    """A run as the API shows it. The worker's name is host:pid: for site admins only."""
    return {
        "id": run.pk,
        "experiment": run.experiment_id,
        "status": run.status,
        "priority": run.priority,
        "attempt": run.attempt,
        "max_attempts": run.max_attempts,
        "worker": run.worker.name if run.worker and site_admin else None,
        "step": run.step,
        "total_steps": run.total_steps,
        "progress": round(run.progress, 4),
        "eta_seconds": run.eta_seconds,
        "heartbeat_at": run.heartbeat_at,
        "queued_at": run.queued_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "cancel_requested": run.cancel_requested,
        "error": run.error,
        "checkpoints": [{"step": c.step, "path": c.path} for c in run.checkpoints.all()],
        "output_path": run.output_path or None,
        "output_files": run.output_files,
        "base_model": run.base_model_info,
        "peak_memory_bytes": run.peak_memory_bytes,
        "stop_reason": run.stop_reason,
        "source": run.source,
        "name": run.name,
        "tags": run.tags,
        "notes": run.notes,
        "base_model_name": run.model_base,
    }


def experiment_out(experiment, runs=None, site_admin: bool = False) -> dict:
    """An experiment, with its runs when they are given."""
    out = {
        "id": experiment.pk,
        "team": experiment.team_id,
        "name": experiment.name,
        "tracked": experiment.tracked,
        "dataset_version": {
            "id": experiment.dataset_version_id,
            "dataset": experiment.dataset_version.dataset_id,
            "number": experiment.dataset_version.number,
        }
        if experiment.dataset_version_id
        else None,
        "base_model": experiment.base_model,
        "technique": experiment.technique,
        "hyperparameters": experiment.hyperparameters,
        "estimate": experiment.estimate,
        "notes": experiment.notes,
        "created_at": experiment.created_at,
    }
    if runs is not None:
        out["runs"] = [run_out(r, site_admin) for r in runs]
    return out
