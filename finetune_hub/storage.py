"""The artifact root: every file the application writes or serves lives under it, and
every path is resolved (symlinks and '..' included) and checked to stay there.

A file or folder becomes visible only whole: every writer builds it in the incoming area,
one folder under the root (so on the same filesystem: the last step is one atomic rename),
and moves it into place. A write cut short by a killed process is left there, not beside
the files it was meant to join, and finetune_hub/sweep.py removes it by its age."""

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from finetune_hub.model_files import is_pickle


def resolve_under(root: Path, relative: str | Path) -> Path:
    root = Path(root).resolve()
    path = (root / relative).resolve()
    if path != root and root not in path.parents:
        raise ValueError(f"{relative} is outside {root}")
    return path


def artifact_path(relative: str | Path) -> Path:
    return resolve_under(settings.ARTIFACT_ROOT, relative)


INCOMING = ".incoming"


@contextmanager
def incoming() -> Iterator[Path]:
    """A fresh path in the incoming area for one write (a file or a folder). Whatever is
    still at it on the way out (the write failed, or was never moved into place) is removed."""
    area = artifact_path(INCOMING)
    area.mkdir(parents=True, exist_ok=True)
    path = area / uuid.uuid4().hex
    try:
        yield path
    finally:
        remove_path(path)


def move_into_place(partial: Path, relative: str | Path) -> Path:
    target = artifact_path(relative)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial.replace(target)
    return target


def remove_path(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_artifact(relative: str | Path) -> None:
    remove_path(artifact_path(relative))


def file_sha256(path: Path) -> str:
    """Read in 1 MB chunks: a checkpoint or a merged model is never held in memory whole."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def files_sha256(folder: Path) -> dict[str, str]:
    """File name -> sha256 for the files directly in a folder."""
    return {p.name: file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}


def assert_no_pickles(folder: str | os.PathLike[str]) -> None:
    """Raises ValueError naming the pickle files (finetune_hub.model_files.PICKLE_SUFFIXES)
    by their place in the folder: the message reaches users, so it names no server path.
    Checked before any model folder is loaded: training resumes, a reward model, an export."""
    root = Path(folder)
    pickles = sorted(
        str(path.relative_to(root))
        for path in root.rglob("*")
        if is_pickle(path.name) and path.is_file()
    )
    if pickles:
        raise ValueError(f"pickle files in the model folder: {', '.join(pickles)}")
