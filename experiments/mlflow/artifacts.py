"""The mlflow-artifacts calls: a run's files (`<experiment>/<run>/artifacts/<path>`) and a
logged model's (`<experiment>/models/<model id>/artifacts/<path>`) kept as directory trees
under their folders with the artifact root's rules (experiments.artifact_tree: relative
paths only, no pickles, bounded, each file written once)."""

import re
from dataclasses import dataclass

from experiments import artifact_tree, logged_models, run_files
from experiments.mlflow.protocol import MlflowError, run_of
from finetune_hub.errors import ServiceError
from finetune_hub.models import Team

RUN_PATH = re.compile(r"^(\d{1,18})/(\d{1,18})/artifacts(?:/(.*))?$")
MODEL_PATH = re.compile(r"^(\d{1,18})/models/(m-[0-9a-f]{32})/artifacts(?:/(.*))?$")


@dataclass
class Owner:
    """A run or a logged model, as the artifact calls see it: its files and folder."""

    run: object = None
    model: object = None

    @property
    def files(self) -> dict:
        return self.run.output_files if self.run else self.model.files

    @property
    def folder(self) -> str:
        return self.run.files_folder if self.run else self.model.folder


def artifact_owner(team: Team, path: str) -> tuple[Owner, str]:
    """The run or model an artifact location names, and the rest of the path."""
    path = path or ""
    if match := RUN_PATH.match(path):
        experiment_id, run_id, rest = match.groups()
        run = run_of(team, run_id)
        if str(run.experiment_id) == experiment_id:
            return Owner(run=run), rest or ""
    elif match := MODEL_PATH.match(path):
        experiment_id, model_id, rest = match.groups()
        try:
            model = logged_models.model_get(team=team, model_id=model_id)
        except ServiceError:
            model = None
        if model is not None and str(model.experiment_id) == experiment_id:
            return Owner(model=model), rest or ""
    raise MlflowError(404, "No such artifact location")


def artifact_put(owner: Owner, rest: str, request, user) -> None:
    """Store the request's body as the file at that path of the owner's tree."""
    chunks = run_files.chunks(request)
    if owner.run:
        run_files.artifact_put(run=owner.run, name=rest, chunks=chunks, by=user, tree=True)
    else:
        logged_models.artifact_put(model=owner.model, path=rest, chunks=chunks, by=user)


def artifact_file(owner: Owner, rest: str):
    """The stored file at that path, open for reading."""
    path = artifact_tree.path_checked(rest, folder=True)
    try:
        return artifact_tree.open_file(owner.files, owner.folder, path)
    except ServiceError as exc:
        raise MlflowError(404, exc.detail) from None


def artifact_files(owner: Owner, rest: str) -> list[dict]:
    """The entries of one directory of the tree, by their names in it (the client joins
    them to the directory it asked for, as MLflow's artifact server answers)."""
    directory = artifact_tree.path_checked(rest, folder=True)
    entries = artifact_tree.listing(owner.files, owner.folder, directory)
    return [{**entry, "path": entry["path"].rsplit("/", 1)[-1]} for entry in entries]


def safe_path(path: str) -> str:
    """A directory or file path a client names, for the calls where MLflow's server answers
    a path that leaves the tree with INVALID_PARAMETER_VALUE "Invalid path" (its
    validate_path_is_safe): '..', absolute, empty parts."""
    try:
        return artifact_tree.path_checked(path, folder=True)
    except ServiceError:
        raise MlflowError(400, "Invalid path") from None


def run_listing(run, path: str) -> list[dict]:
    """MLflow's artifacts/list: one directory of the run's tree, each entry by its path from
    the run's artifact root."""
    directory = safe_path(path)
    entries = artifact_files(Owner(run=run), directory)
    return [
        {**entry, "path": f"{directory}/{entry['path']}" if directory else entry["path"]}
        for entry in entries
    ]
