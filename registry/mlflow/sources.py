"""A model version's source, checked as MLflow's server checks it (mlflow/server/handlers.py:
a local path only inside the run's artifact directory, a URI without relative parts), and the
run of this team it names, for lineage. This hub keeps a run's artifacts behind
mlflow-artifacts:/ URIs, never a local path of the server, so a local source is refused."""

import posixpath
import re
import urllib.parse

from experiments.mlflow.protocol import MlflowError, run_of
from experiments.models import TrainingRun
from finetune_hub.models import Team

PROMPT_TAG = "mlflow.prompt.is_prompt"
RUN_SOURCE = re.compile(r"^runs:/([0-9]{1,18})(?:/|$)")
ARTIFACT_SOURCE = re.compile(r"^mlflow-artifacts:/+([0-9]{1,18})/([0-9]{1,18})/artifacts(?:/|$)")
LOCAL_HOSTS = (".", "localhost", "127.0.0.1")


def _is_local(source: str) -> bool:
    parsed = urllib.parse.urlparse(source)
    try:
        host = parsed.hostname
    except ValueError:
        host = None
    remote = host and not (host == "." or host.startswith(LOCAL_HOSTS[1:]))
    if parsed.scheme == "":
        return True
    if parsed.scheme == "file":
        if remote:
            raise MlflowError(
                400,
                f"{source} is not a valid remote uri. For remote access on windows, please "
                "consider using a different scheme such as SMB (e.g. smb://<hostname>/<path>).",
            )
        return True
    return False


def _no_relative_parts(source: str) -> None:
    message = (
        f"Invalid model version source: '{source}'. If supplying a source as an http, https, "
        "local file path, ftp, objectstore, or mlflow-artifacts uri, an absolute path must be "
        "provided without relative path references present. Please provide an absolute path."
    )
    while (unquoted := urllib.parse.unquote_plus(source)) != source:
        source = unquoted
    path = re.sub(r"/+", "/", urllib.parse.urlparse(source).path.rstrip("/"))
    if "\x00" in path or any(part == ".." for part in source.split("/")):
        raise MlflowError(400, message)
    # MLflow compares with the path resolved on its disk; normalised as text, here.
    if posixpath.normpath(path) != path or not path.startswith("/"):
        raise MlflowError(400, message)


def _local_refused(source: str, by: str) -> MlflowError:
    return MlflowError(
        400,
        f"Invalid model version source: '{source}'. To use a local path as a model version "
        f"source, the {by} request parameter has to be specified and the local path has to be "
        f"contained within the artifact directory of the run specified by the {by}.",
    )


def source_check(
    team: Team, source: str, run_id: str, model_id: str, tags: dict
) -> TrainingRun | None:
    """Refuses a source MLflow refuses; answers the run of this team whose artifacts the
    source names (the version's lineage), or None."""
    if tags.get(PROMPT_TAG) == "true":
        parsed = urllib.parse.urlparse(source)
        if parsed.scheme == "file" or (parsed.scheme == "" and source.startswith("/")):
            raise MlflowError(
                400,
                f"Invalid prompt source: '{source}'. Local source paths are not allowed for "
                "prompts.",
            )
        if parsed.scheme:
            _no_relative_parts(source)
        return None
    if _is_local(source):
        if run_id and not model_id:
            run_of(team, run_id)  # an unknown run is MLflow's RESOURCE_DOES_NOT_EXIST
        raise _local_refused(source, "model_id" if model_id else "run_id")
    _no_relative_parts(source)
    return _lineage(team, source)


def _lineage(team: Team, source: str) -> TrainingRun | None:
    """The run of this team whose artifacts the source names (runs:/<id>/..., or
    mlflow-artifacts:/<experiment>/<run>/artifacts/...); a run_id alone is kept as text."""
    run_match = RUN_SOURCE.match(source)
    artifact_match = ARTIFACT_SOURCE.match(source)
    if not run_match and not artifact_match:
        return None
    named = run_match.group(1) if run_match else artifact_match.group(2)
    run = TrainingRun.objects.filter(experiment__team=team, pk=int(named)).first()
    if run and artifact_match and str(run.experiment_id) != artifact_match.group(1):
        return None
    return run
