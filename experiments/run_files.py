"""A run's output files sent from elsewhere (the native API's PUT /api/runs/{id}/artifacts
and MLflow's artifact upload): the name rule (finetune_hub.model_files: safetensors weights and
small text files; pickles refused), the streamed, bounded write, and the check that a file is
what its name says before it becomes visible."""

import re
from collections.abc import Iterator

from django.db import transaction

from experiments import artifact_tree
from experiments.models import TrainingRun
from experiments.tracked import writable_require
from finetune_hub.errors import Conflict, invalid
from finetune_hub.model_files import PICKLE_SUFFIXES, TEXT_SUFFIXES, is_artifact_name
from finetune_hub.storage import move_into_place

MAX_RUN_FILES = 200
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def file_name_checked(name: str, field: str = "name") -> str:
    if not isinstance(name, str) or not FILE_NAME.match(name) or ".." in name:
        raise invalid(
            f"{field}: a plain file name (letters, digits, _ . -), no folders",
            field=field,
            status=422,
        )
    if not is_artifact_name(name):
        raise invalid(
            f"{field}: {name[:60]!r} is not accepted: weights as .safetensors only (pickled "
            f"{', '.join(sorted(PICKLE_SUFFIXES))} files run code when loaded), configs and "
            f"tokenizers as {', '.join(TEXT_SUFFIXES)}",
            field=field,
            status=422,
        )
    return name


def chunks(stream, size: int = 1 << 20) -> Iterator[bytes]:
    """A request body (or any file-like stream) read a megabyte at a time, never whole."""
    return iter(lambda: stream.read(size), b"")


def artifact_put(
    *, run: TrainingRun, name: str, chunks: Iterator[bytes], by, tree: bool = False
) -> TrainingRun:
    """Streams one output file of a tracked run to its folder, under the artifact root.
    Each file is written once (what a registered version points at never changes), is
    bounded by ARTIFACT_MAX_UPLOAD_BYTES, and is checked before it becomes visible: a
    half-written or refused file never is. With `tree` (MLflow's artifacts), `name` is a
    relative path (artifact_tree.path_checked: any name but a pickle); without, a plain
    file name of the model file rule."""
    writable_require(run, by)
    name = artifact_tree.path_checked(name) if tree else file_name_checked(name)
    folder_rel = f"{run.folder}/output"
    artifact_tree.collision_require(run.output_files, name)
    if not tree and len(run.output_files) >= MAX_RUN_FILES:
        raise Conflict(f"A run holds at most {MAX_RUN_FILES} files")
    with artifact_tree.received(chunks, name, allow_empty=tree) as (partial, digest):
        with transaction.atomic():
            locked = TrainingRun.objects.select_for_update().get(pk=run.pk)
            artifact_tree.collision_require(locked.output_files, name)
            # A file there that the run does not list was moved into place by an upload
            # that crashed before its commit: this one replaces it.
            artifact_tree.unlinked(f"{folder_rel}/{name}")
            move_into_place(partial, f"{folder_rel}/{name}")
            locked.output_path = folder_rel
            locked.output_files = {**locked.output_files, name: digest}
            locked.save(update_fields=["output_path", "output_files"])
            return locked
