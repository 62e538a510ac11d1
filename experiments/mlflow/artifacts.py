"""The mlflow-artifacts calls: a run's files are stored flat in its output folder with the
artifact root's rules (weights as safetensors only; see experiments.tracked), whatever
artifact_path they were logged under."""

import re

from experiments import run_files
from experiments.mlflow.protocol import MlflowError, run_of
from experiments.models import TrainingRun
from finetune_hub.models import Team
from finetune_hub.storage import artifact_path

ARTIFACT_PATH = re.compile(r"^(\d{1,18})/(\d{1,18})/artifacts(?:/(.*))?$")


def artifact_run(team: Team, path: str) -> tuple[TrainingRun, str]:
    """The run an artifact location `<experiment>/<run>/artifacts[/<rest>]` names, and the
    rest."""
    match = ARTIFACT_PATH.match(path or "")
    if not match:
        raise MlflowError(404, "No such artifact location")
    experiment_id, run_id, rest = match.groups()
    run = run_of(team, run_id)
    if str(run.experiment_id) != experiment_id:
        raise MlflowError(404, "No such artifact location")
    return run, rest or ""


def artifact_put(run: TrainingRun, rest: str, request, user) -> None:
    """Store the request's body as the file of that name in the run's output folder."""
    name = rest.rsplit("/", 1)[-1]
    run_files.artifact_put(run=run, name=name, chunks=run_files.chunks(request), by=user)


def artifact_file(run: TrainingRun, rest: str):
    """The stored file of that name, open for reading."""
    name = rest.rsplit("/", 1)[-1]
    if name not in run.output_files:
        raise MlflowError(404, f"No artifact {name[:100]!r}")
    return open(artifact_path(f"{run.output_path}/{name}"), "rb")  # noqa: SIM115


def artifact_files(run: TrainingRun, rest: str) -> list[dict]:
    """The run's files (all at the root: a folder below it lists nothing)."""
    if rest:
        return []
    return [
        {"path": name, "is_dir": False, "file_size": _size(run, name)}
        for name in sorted(run.output_files)
    ]


def _size(run: TrainingRun, name: str) -> int:
    try:
        return artifact_path(f"{run.output_path}/{name}").stat().st_size
    except OSError:
        return 0
