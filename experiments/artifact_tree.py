"""Files kept as a directory tree under an owner's folder (a tracked run's output, a logged
model's files): the relative path rule, the streamed and bounded receive of one file, the
check that a new path does not collide with a file or folder already there, and the listing
of one directory. The owner's files map (relative path -> sha256) is what exists: a path
that is not in it is never served, whatever is on disk."""

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from finetune_hub.bounds import json_loads
from finetune_hub.errors import Conflict, FieldError, ServiceError, invalid
from finetune_hub.model_files import PICKLE_SUFFIXES, WEIGHT_SUFFIX, is_pickle
from finetune_hub.storage import artifact_path, incoming

MAX_FILES = 1000
MAX_DEPTH = 16
MAX_PATH = 500
# One folder or file name: no leading dot (no hidden files, no '.', no '..'), no slash.
SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.,+=@\- ]{0,199}$")


def path_checked(path, field: str = "path", *, folder: bool = False) -> str:
    """A relative path under the owner's folder: names joined by '/', never absolute, never
    '..'; a file's name is not a pickle (it would run code when loaded). With `folder`, the
    path of a directory to list ('' or '.' is the top)."""
    text = path if isinstance(path, str) else ""
    if folder and text.strip("/") in ("", "."):
        return ""
    if folder:
        text = text.rstrip("/")
    parts = text.split("/")
    if (
        not text
        or len(text) > MAX_PATH
        or len(parts) > MAX_DEPTH
        or not all(SEGMENT.match(part) for part in parts)
    ):
        raise invalid(
            f"Invalid path {text[:100]!r} for {field}: names of letters, digits and _ . - "
            "joined by '/', relative, without '..'",
            field=field,
            status=400,
        )
    if not folder and is_pickle(parts[-1]):
        raise invalid(
            f"{text[:200]} is refused: pickle files ({', '.join(sorted(PICKLE_SUFFIXES))}) "
            "run code when loaded; save weights as .safetensors",
            field=field,
            status=400,
        )
    return text


def collision_require(files: dict, path: str) -> None:
    """Each file is written once, and a path is a file or a folder, never both."""
    if path in files:
        raise Conflict(f"{path} was uploaded already; files are written once")
    parts = path.split("/")
    for i in range(1, len(parts)):
        if "/".join(parts[:i]) in files:
            raise Conflict(f"{'/'.join(parts[:i])} is a file, not a folder")
    if any(key.startswith(f"{path}/") for key in files):
        raise Conflict(f"{path} is a folder")
    if len(files) >= MAX_FILES:
        raise Conflict(f"At most {MAX_FILES} files")


def _verify(path: Path, name: str) -> None:
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


@contextmanager
def received(chunks: Iterator[bytes], name: str, *, allow_empty: bool) -> Iterator[tuple]:
    """The body streamed to a fresh file in the incoming area, bounded by
    ARTIFACT_MAX_UPLOAD_BYTES and checked to be what its name says: (path, sha256). The file
    is removed on the way out unless the caller moved it into place."""
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
        if size == 0 and not allow_empty:
            raise invalid(f"{name} is empty", field="file", status=422)
        _verify(partial, name)
        yield partial, digest.hexdigest()


def listing(files: dict, folder_rel: str, directory: str) -> list[dict]:
    """The entries directly in `directory` ('' the top): MLflow's file infos, paths relative
    to the owner's folder, by path. A file's own path
    lists nothing (as MLflow's stores answer)."""
    prefix = f"{directory}/" if directory else ""
    entries: dict[str, bool] = {}
    for key in files:
        if key.startswith(prefix):
            head, sep, _ = key[len(prefix) :].partition("/")
            entries[prefix + head] = entries.get(prefix + head, False) or bool(sep)
    return [
        {"path": path, "is_dir": True}
        if is_dir
        else {"path": path, "is_dir": False, "file_size": size_of(folder_rel, path)}
        for path, is_dir in sorted(entries.items())
    ]


def size_of(folder_rel: str, path: str) -> int:
    try:
        return artifact_path(f"{folder_rel}/{path}").stat().st_size
    except (OSError, ValueError):
        return 0


def unlinked(relative: str) -> Path:
    """The path of a file under the root that no symlink leads to (resolved, it is the plain
    join of the root and the checked relative path): a link planted in a tree, even one
    pointing inside the root, is never followed to read or write."""
    try:
        path = artifact_path(relative)
    except ValueError:
        path = None
    if path is None or path != artifact_path("") / relative:
        raise ServiceError(f"No artifact {relative.split('/', 2)[-1][:200]!r}", status=404)
    return path


def open_file(files: dict, folder_rel: str, path: str):
    """One listed file, open for reading."""
    if path not in files:
        raise ServiceError(f"No artifact {path[:200]!r}", status=404)
    try:
        return open(unlinked(f"{folder_rel}/{path}"), "rb")  # noqa: SIM115
    except OSError:
        raise ServiceError(f"No artifact {path[:200]!r}", status=404) from None
