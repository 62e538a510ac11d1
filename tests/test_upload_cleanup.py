"""A killed upload leaves nothing behind (issue 27). A web process killed mid-body left Django's
temporary upload file in the system's temporary folder, and one killed while storing left a
`.partial` beside the stored files, where the next upload was stored next to it.

Uploads now spool to the var folder's uploads/; every artifact write is built in the
artifact root's incoming area and renamed into place whole; a dataset version's folder is
renamed into place before its commit, so a crash leaves at most a folder with no row, which
the next upload of that number replaces; and the worker removes from both folders what
nobody has touched for LEFTOVER_MAX_AGE_S, when it starts and every ten minutes."""

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
from django.conf import settings
from huey.contrib.djhuey import HUEY

from datasets_app import services
from datasets_app.models import Dataset, DatasetVersion
from experiments import run_files
from experiments.models import TrainingRun
from experiments.training.supervisor import child_env
from finetune_hub import tasks
from finetune_hub.storage import INCOMING, artifact_path
from finetune_hub.sweep import leftovers_remove
from tests.security.test_production_server import free_port
from tests.support.data import examples, jsonl
from tests.support.tracked import start, weights
from tests.support.training_helpers import wait_for

BOUNDARY = "KiLlEdMiDbOdY"


def backdate(path: Path, seconds: float) -> None:
    """Moves the modification time of the path, and of everything in it, into the past."""
    stamp = time.time() - seconds
    for inner in [path, *path.rglob("*")]:
        os.utime(inner, (stamp, stamp))


def too_old() -> float:
    return settings.LEFTOVER_MAX_AGE_S + 60


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def incoming_area() -> Path:
    return artifact_path(INCOMING)


def stored_name(data: bytes) -> str:
    return f"{hashlib.sha256(data).hexdigest()}.jsonl"


@pytest.fixture
def dataset(team, owner):
    return Dataset.objects.create(team=team, name="d", task="instruction", created_by=owner)


def test_the_sweep_removes_what_nobody_touched_for_its_age_and_keeps_the_rest(settings, tmp_path):
    settings.FILE_UPLOAD_TEMP_DIR = tmp_path / "uploads"
    folders = [settings.FILE_UPLOAD_TEMP_DIR, incoming_area()]
    for folder in folders:
        (folder / "old-folder").mkdir(parents=True)
        for name in ("old", "recent", "fresh", "old-folder/file"):
            (folder / name).write_bytes(b"x")
        backdate(folder / "old", too_old())
        backdate(folder / "old-folder", too_old())
        backdate(folder / "recent", settings.LEFTOVER_MAX_AGE_S - 60)
        # A folder still being written: old files, but one written just now.
        (folder / "slow-folder").mkdir()
        (folder / "slow-folder" / "first").write_bytes(b"x")
        backdate(folder / "slow-folder", too_old())
        (folder / "slow-folder" / "latest").write_bytes(b"x")

    removed = leftovers_remove()

    assert removed == [folder / name for folder in folders for name in ("old", "old-folder")]
    for folder in folders:
        assert names(folder) == ["fresh", "recent", "slow-folder"]
    assert leftovers_remove() == []


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def web_server(db, tmp_path):
    """runserver on a free port, on this test database, with a var folder of its own (its
    uploads folder is this test's alone); the test kills it, or it is killed after."""
    port, var = free_port(), tmp_path / "server-var"
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "runserver",
            "--noreload",
            "--skip-checks",
            f"127.0.0.1:{port}",
        ],
        cwd=settings.BASE_DIR,
        env=dict(child_env(), FINETUNE_HUB_VAR=str(var)),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _answers(port) or process.poll() is not None, timeout=180)
        assert process.poll() is None, "the server did not start"
        yield process, port, var / "uploads"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def multipart_head(path: str, token: str, body_size: int) -> tuple[bytes, int]:
    """The request line, headers and the file part's own head of a multipart upload whose
    file holds body_size bytes; and the Content-Length that the whole body would have."""
    part = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="data.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    length = len(part) + body_size + len(f"\r\n--{BOUNDARY}--\r\n")
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()
    return request + part, length


@pytest.mark.django_db(transaction=True)
def test_an_upload_killed_mid_body_leaves_its_file_only_where_the_sweep_takes_it(
    api, dataset, web_server, settings
):
    process, port, uploads = web_server
    size = 3 * settings.FILE_UPLOAD_MAX_MEMORY_SIZE  # past it, Django spools to a file
    head, _ = multipart_head(f"/api/datasets/{dataset.pk}/versions", api.token, size)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head + b"x" * (size // 2))  # half the file, then nothing more
        spooled = wait_for(
            lambda: [p for p in uploads.iterdir() if p.stat().st_size > size // 4], timeout=60
        )
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    # The process could not remove its file; it lies in the project's folder, not /tmp.
    assert len(spooled) == 1 and spooled[0].name.endswith(".upload.jsonl")
    assert spooled[0].exists()

    settings.FILE_UPLOAD_TEMP_DIR = uploads
    assert leftovers_remove() == []  # fresh: as far as anyone can tell, a slow live upload
    backdate(spooled[0], too_old())
    assert leftovers_remove() == spooled
    assert names(uploads) == []
    assert not DatasetVersion.objects.exists()


# Stores a version in a process killed just before (or just after) the version's folder is
# renamed into place: after the write, before the commit.
KILLED_STORE = """
import os, sys
import django

django.setup()
from datasets_app import services
from datasets_app.models import Dataset

rename = services.move_into_place


def killed(partial, relative):
    if sys.argv[2] == "after":
        rename(partial, relative)
    os._exit(9)


services.move_into_place = killed
dataset = Dataset.objects.get(pk=int(sys.argv[1]))
data = sys.stdin.buffer.read()
by = dataset.created_by
services.dataset_version_upload(dataset=dataset, filename="d.jsonl", data=data, by=by)
"""


@pytest.mark.parametrize("killed", ["before", "after"])
@pytest.mark.django_db(transaction=True)
def test_a_store_killed_mid_way_leaves_nothing_after_the_sweep_and_the_next_is_stored_alone(
    api, dataset, tiny_model, killed
):
    env = dict(
        child_env(), DJANGO_SETTINGS_MODULE="finetune_hub.settings", DEFAULT_BASE_MODEL=tiny_model
    )
    result = subprocess.run(
        [sys.executable, "-c", KILLED_STORE, str(dataset.pk), killed],
        cwd=settings.BASE_DIR,
        env=env,
        input=jsonl(examples("instruction", 5)).encode(),
        capture_output=True,
        timeout=300,
    )
    assert result.returncode == 9, result.stderr.decode()[-2000:]
    assert not DatasetVersion.objects.exists()
    versions = artifact_path(f"datasets/{dataset.pk}")
    if killed == "before":
        # The whole version waits in the incoming area, nothing beside the versions.
        assert names(versions) == [] and len(names(incoming_area())) == 1
    else:
        # Renamed into place, not committed: a folder that no row has.
        assert names(versions) == ["v1"] and names(incoming_area()) == []

    for leftover in incoming_area().iterdir():
        backdate(leftover, too_old())
    leftovers_remove()
    assert names(incoming_area()) == []

    data = jsonl(examples("instruction", 6)).encode()
    r = api.upload(f"/api/datasets/{dataset.pk}/versions", data)
    assert r.status_code == 201, r.content
    assert r.json()["number"] == 1
    assert names(versions) == ["v1"]
    assert names(versions / "v1") == [stored_name(data)]  # the orphan's file is gone
    assert (versions / "v1" / stored_name(data)).read_bytes() == data
    assert names(incoming_area()) == []


def test_a_version_folder_is_never_seen_half_written(dataset, owner, monkeypatch):
    data = jsonl(examples("instruction", 5)).encode()
    versions = artifact_path(f"datasets/{dataset.pk}")
    seen = []

    def fails_instead(partial, relative):
        seen.append((names(versions), (partial / stored_name(data)).read_bytes() == data))
        raise OSError("the disk went away")

    monkeypatch.setattr(services, "move_into_place", fails_instead)
    with pytest.raises(OSError):
        services.dataset_version_upload(dataset=dataset, filename="d.jsonl", data=data, by=owner)

    assert seen == [([], True)]  # the whole file, out of sight, until the rename
    assert not DatasetVersion.objects.exists()
    assert names(versions) == [] and names(incoming_area()) == []


def test_a_failure_after_the_rename_removes_the_renamed_folder(dataset, owner, monkeypatch):
    rename = services.move_into_place

    def fails_after(partial, relative):
        rename(partial, relative)
        assert names(artifact_path(relative)) != []
        raise OSError("the commit did not happen")

    monkeypatch.setattr(services, "move_into_place", fails_after)
    with pytest.raises(OSError):
        services.dataset_version_upload(
            dataset=dataset,
            filename="d.jsonl",
            data=jsonl(examples("instruction", 5)).encode(),
            by=owner,
        )
    assert not DatasetVersion.objects.exists()
    assert names(artifact_path(f"datasets/{dataset.pk}")) == []
    assert names(incoming_area()) == []


def test_a_streamed_artifact_is_written_out_of_sight_and_replaces_an_orphan(api, team, owner):
    run = TrainingRun.objects.get(pk=start(api, team)["id"])
    output = artifact_path(f"{run.folder}/output")
    output.mkdir(parents=True)
    # Moved into place by an upload killed before its commit: the run does not list it.
    (output / "adapter_model.safetensors").write_bytes(b"orphan")
    data, seen = weights(), []

    def stream():
        yield data[:10]
        seen.append((names(output), len(names(incoming_area()))))
        yield data[10:]

    run_files.artifact_put(run=run, name="adapter_model.safetensors", chunks=stream(), by=owner)

    assert seen == [(["adapter_model.safetensors"], 1)]  # no partial beside the run's files
    assert names(output) == ["adapter_model.safetensors"]
    assert (output / "adapter_model.safetensors").read_bytes() == data
    assert names(incoming_area()) == []
    assert TrainingRun.objects.get(pk=run.pk).output_files == {
        "adapter_model.safetensors": hashlib.sha256(data).hexdigest()
    }


def test_the_worker_sweeps_every_ten_minutes():
    def due(minute: int) -> bool:
        periodic = HUEY.read_periodic(datetime(2025, 1, 1, 3, minute))
        return tasks.remove_leftovers.task_class in {type(task) for task in periodic}

    assert due(0) and due(10) and not due(15)


@pytest.mark.django_db(transaction=True)
def test_a_starting_worker_sweeps_at_once(consumers):  # noqa: F811 (the imported fixture)
    upload = Path(settings.FILE_UPLOAD_TEMP_DIR) / "tmpkilled.upload.jsonl"
    partial = incoming_area() / "killed"
    partial.mkdir(parents=True)
    for path in (upload, partial / "model.safetensors"):
        path.write_bytes(b"x")
    backdate(upload, too_old())
    backdate(partial, too_old())
    consumers(workers=1)
    wait_for(lambda: not upload.exists() and not partial.exists(), timeout=180)
