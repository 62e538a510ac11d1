"""A run's output files sent from elsewhere (the native API's PUT /api/runs/{id}/artifacts
and MLflow's artifact upload): the name rule (finetune_hub.model_files: safetensors weights and
small text files; pickles refused), the streamed, bounded write, and the check that a file is
what its name says before it becomes visible."""

import hashlib
import re
from collections.abc import Iterator

from django.conf import settings
from django.db import transaction

from experiments.models import TrainingRun
from experiments.tracked import writable_require
from finetune_hub.bounds import json_loads
from finetune_hub.errors import Conflict, FieldError, ServiceError, invalid
from finetune_hub.model_files import PICKLE_SUFFIXES, TEXT_SUFFIXES, WEIGHT_SUFFIX, is_artifact_name
from finetune_hub.storage import incoming, move_into_place

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


def _verify(path, name: str) -> None:
    """A .safetensors file must open as one; a .json file must parse."""
    if name.endswith(WEIGHT_SUFFIX):
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                list(fh.keys())
        except Exception:  # noqa: BLE001 - any failure to open means it is not safetensors
            raise invalid(
                f"{name} is not a readable safetensors file", field="file", status=422
            ) from None
    elif name.endswith(".json"):
        try:
            json_loads(path.read_bytes())
        except ValueError:
            raise invalid(f"{name} is not valid JSON", field="file", status=422) from None


def chunks(stream, size: int = 1 << 20) -> Iterator[bytes]:
    """A request body (or any file-like stream) read a megabyte at a time, never whole."""
    return iter(lambda: stream.read(size), b"")


def artifact_put(*, run: TrainingRun, name: str, chunks: Iterator[bytes], by) -> TrainingRun:
    """Streams one output file of a tracked run to its folder, under the artifact root.
    Each file is written once (what a registered version points at never changes), is
    bounded by ARTIFACT_MAX_UPLOAD_BYTES, and is checked before it becomes visible: a
    half-written or refused file never is."""
    writable_require(run, by)
    name = file_name_checked(name)
    folder_rel = f"{run.folder}/output"
    if name in run.output_files:
        raise Conflict(f"{name} was uploaded already; a run's files are written once")
    if len(run.output_files) >= MAX_RUN_FILES:
        raise Conflict(f"A run holds at most {MAX_RUN_FILES} files")
    limit, size, digest = settings.ARTIFACT_MAX_UPLOAD_BYTES, 0, hashlib.sha256()
    with incoming() as partial:
        with open(partial, "wb") as fh:
            for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise ServiceError(
                        f"The file is larger than the artifact limit of {limit:,} bytes",
                        status=413,
                        errors=[FieldError(field="file", message="too large")],
                    )
                digest.update(chunk)
                fh.write(chunk)
        if size == 0:
            raise invalid(f"{name} is empty", field="file", status=422)
        _verify(partial, name)
        with transaction.atomic():
            locked = TrainingRun.objects.select_for_update().get(pk=run.pk)
            if name in locked.output_files:
                raise Conflict(f"{name} was uploaded already; a run's files are written once")
            # A file there that the run does not list was moved into place by an upload
            # that crashed before its commit: this one replaces it.
            move_into_place(partial, f"{folder_rel}/{name}")
            locked.output_path = folder_rel
            locked.output_files = {**locked.output_files, name: digest.hexdigest()}
            locked.save(update_fields=["output_path", "output_files"])
            return locked
