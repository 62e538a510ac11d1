"""The artifact root: every file the application writes or serves lives under it, and
every path is resolved (symlinks and '..' included) and checked to stay there."""

import hashlib
import shutil
from pathlib import Path

from django.conf import settings


def resolve_under(root: Path, relative: str | Path) -> Path:
    root = Path(root).resolve()
    path = (root / relative).resolve()
    if path != root and root not in path.parents:
        raise ValueError(f"{relative} is outside {root}")
    return path


def artifact_path(relative: str | Path) -> Path:
    return resolve_under(settings.ARTIFACT_ROOT, relative)


def write_artifact(relative: str | Path, data: bytes) -> Path:
    path = artifact_path(relative)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def remove_artifact(relative: str | Path) -> None:
    path = artifact_path(relative)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


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
