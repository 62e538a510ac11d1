"""Runs a claimed run's training process and watches it: heartbeat, cancel (SIGTERM, then
SIGKILL), crash (failed with the error and the last log lines), killed (re-queued to resume)."""

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.utils import timezone

from experiments.models import TrainingRun
from experiments.training import queue
from experiments.training.child import EXIT_REFUSED
from experiments.training.lifeline import SUPERVISOR_PID, SUPERVISOR_STARTED
from experiments.training.reporting import log_tail
from finetune_hub.storage import artifact_path

POLL_S = 1.0
KILL_AFTER_S = 30.0


def child_env(gpus: list[int] | None = None) -> dict:
    """The child uses this process's database and artifact root (tests point them elsewhere),
    sees only the GPUs its run holds, and knows its supervisor (this process) to stop when
    it is gone, also under torchrun, whose ranks are not this process's children."""
    import psutil

    env = dict(os.environ, PYTHONUNBUFFERED="1", ARTIFACT_ROOT=str(settings.ARTIFACT_ROOT))
    env["FINETUNE_HUB_DB_NAME"] = str(connection.settings_dict["NAME"])
    env["MODEL_CACHE_DIR"] = str(settings.MODEL_CACHE_DIR)
    env["BASE_MODEL_DIRS"] = ":".join(map(str, settings.BASE_MODEL_DIRS))
    env[SUPERVISOR_PID] = str(os.getpid())
    env[SUPERVISOR_STARTED] = repr(psutil.Process().create_time())
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))  # the host's numbering
    return env


def processes(run: TrainingRun) -> int:
    """One process a GPU the run holds; on a CPU worker, the run's `gpus` processes."""
    return len(run.gpus) if run.gpus else int(run.experiment.hyperparameters.get("gpus") or 1)


def command(run: TrainingRun, log_path) -> list[str]:
    child = ["-m", "experiments.training.child", str(run.pk), str(log_path)]
    n = processes(run)
    if n == 1:
        return [sys.executable, *child]
    # torchrun: n ranks on this host (a free port for their rendezvous), no restart of its
    # own (a failed rank fails the attempt; the supervisor decides what comes next).
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={n}",
        "--max-restarts=0",
        "--monitor-interval=1",
        *child,
    ]


def start(run: TrainingRun):
    folder = artifact_path(run.folder)
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "train.log"
    with open(log_path, "ab") as log:
        log.write(
            f"--- attempt {run.attempt} at {timezone.now():%Y-%m-%d %H:%M:%S} UTC ---\n".encode()
        )
        log.flush()
        process = subprocess.Popen(
            command(run, log_path),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=settings.BASE_DIR,
            env=child_env(run.gpus),
            start_new_session=True,  # its own process group: a signal reaches its helpers too
        )
    TrainingRun.objects.filter(pk=run.pk).update(pid=process.pid)
    return process, log_path


def supervise(
    run: TrainingRun, on_poll: Callable[[TrainingRun], None] | None = None
) -> TrainingRun:
    process, log_path = start(run)
    cancelled_at = None
    while process.poll() is None:
        time.sleep(POLL_S)
        TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now())
        run.refresh_from_db()
        if run.cancel_requested and cancelled_at is None:
            cancelled_at = time.monotonic()
            os.killpg(process.pid, signal.SIGTERM)
        elif cancelled_at and time.monotonic() - cancelled_at > KILL_AFTER_S:
            os.killpg(process.pid, signal.SIGKILL)
        if on_poll:
            on_poll(run)
    return conclude(run, process.returncode, log_path, cancelled=cancelled_at is not None)


def conclude(run: TrainingRun, code: int, log_path, *, cancelled: bool) -> TrainingRun:
    run = _conclude(run, code, log_path, cancelled=cancelled)
    queue.dispatch_if_waiting()  # its GPUs are free: a run that waited for them may go
    return run


def _conclude(run: TrainingRun, code: int, log_path, *, cancelled: bool) -> TrainingRun:
    run.refresh_from_db()
    TrainingRun.objects.filter(pk=run.pk).update(log_tail=log_tail(log_path))
    last = run.checkpoints.order_by("-step").first()
    kept = f"; last checkpoint kept (step {last.step})" if last else ""
    if cancelled:
        return queue.run_finish(
            run=run, status=TrainingRun.Status.CANCELLED, error=f"Cancelled{kept}"
        )
    if code == 0:
        return queue.run_finish(run=run, status=TrainingRun.Status.SUCCEEDED)
    if code == EXIT_REFUSED:
        return queue.run_finish(run=run, status=TrainingRun.Status.FAILED, error=run.error)
    if code < 0:
        return queue.run_requeue_or_fail(run=run, reason=killed("Training process", -code))
    lines = log_tail(log_path, 25)
    if processes(run) > 1 and (signal_number := killed_rank(log_path)):
        return queue.run_requeue_or_fail(
            run=run, reason=killed("A training process was", signal_number)
        )
    return queue.run_finish(
        run=run, status=TrainingRun.Status.FAILED, error=f"Training failed (exit {code}):\n{lines}"
    )


def killed(what: str, signal_number: int) -> str:
    """Why a killed attempt is queued again: "<what> killed by SIGKILL (out of memory?)"."""
    name = signal.Signals(signal_number).name
    return f"{what} killed by {name}{' (out of memory?)' if name == 'SIGKILL' else ''}"


# torchrun's failure summary: "exitcode  : -9 (pid: 4242)" for a rank a signal ended.
RANK_KILLED = re.compile(r"exitcode\s*:\s*-(\d+)\s*\(pid")


def killed_rank(log_path) -> int | None:
    """The signal that ended a rank, when torchrun's summary says one did (the others were
    stopped by torchrun): a kill, not the run's fault, is retried like a single process's."""
    for match in RANK_KILLED.finditer(log_tail(log_path, 80)):
        number = int(match.group(1))
        if number in signal.valid_signals() and number != signal.SIGTERM:
            return number
    return None
