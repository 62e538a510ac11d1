"""What killed processes leave behind: Django's temporary upload files (FILE_UPLOAD_TEMP_DIR)
and writes in progress in the artifact root's incoming area (finetune_hub.storage.incoming).
Every path that ends normally removes its own; a process killed mid-upload or mid-write
cannot, so the worker removes what nobody has touched for LEFTOVER_MAX_AGE_S, when it starts
and every ten minutes (finetune_hub/tasks.py). An entry's age is that of the newest file
in it: a slow upload that is still alive writes to its file as its bytes arrive, and stays."""

import logging
import os
import time
from pathlib import Path

from django.conf import settings

from finetune_hub.storage import INCOMING, artifact_path, remove_path

log = logging.getLogger(__name__)


def leftover_folders() -> list[Path]:
    return [Path(settings.FILE_UPLOAD_TEMP_DIR), artifact_path(INCOMING)]


def _last_touched(path: Path) -> float:
    """The newest modification time of the path and, for a folder, of anything in it."""
    stamps = [path.lstat().st_mtime]
    for folder, dirs, files in os.walk(path):  # nothing for a file
        stamps += [os.lstat(os.path.join(folder, name)).st_mtime for name in dirs + files]
    return max(stamps)


def leftovers_remove() -> list[Path]:
    """Removes the entries of the leftover folders untouched for LEFTOVER_MAX_AGE_S."""
    cutoff = time.time() - settings.LEFTOVER_MAX_AGE_S
    removed = []
    for folder in leftover_folders():
        for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
            try:
                if _last_touched(entry) < cutoff:
                    remove_path(entry)
                    removed.append(entry)
            except FileNotFoundError:
                pass  # moved into place, or removed by another worker's sweep, meanwhile
    if removed:
        log.info("Removed %d leftovers of interrupted uploads and writes", len(removed))
    return removed
