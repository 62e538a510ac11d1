"""The training process: `python -m experiments.training.child RUN_ID`. Started and
watched by the supervisor; a crash here cannot take the worker down, and its exit returns
all GPU memory."""

import logging
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

EXIT_REFUSED = 3  # a ServiceError: the run cannot be trained here (its message is stored)
KILL_AFTER_S = 10.0
# The supervising worker process, set by it in the environment: under torchrun a rank's
# parent is torchrun's agent, which outlives a killed worker.
SUPERVISOR_PID = "FINETUNE_HUB_SUPERVISOR_PID"
SUPERVISOR_STARTED = "FINETUNE_HUB_SUPERVISOR_STARTED"


def supervisor_alive_check():
    """A function that says whether this process's supervisor still runs: the worker named
    in the environment (the same process: its start time too, so a reused PID is not it),
    else the parent this process started with."""
    pid, started = os.environ.get(SUPERVISOR_PID), os.environ.get(SUPERVISOR_STARTED)
    if not (pid and started):
        parent = os.getppid()
        return lambda: os.getppid() == parent
    import psutil

    def alive() -> bool:
        try:
            return repr(psutil.Process(int(pid)).create_time()) == started
        except psutil.Error:
            return False

    return alive


def exit_with_supervisor(interval: float = 1.0) -> threading.Thread:
    """Stops this process (and its process group: data loader workers) once its supervisor
    is gone. A worker killed outright (SIGKILL, out of memory) cannot stop its training
    process, and the reaper then queues the run again: without this, a second process would
    train the same run into the same folder beside the orphan, which holds its GPU."""
    alive = supervisor_alive_check()

    def watch():
        while alive():
            time.sleep(interval)
        group = os.getpgid(0)
        os.killpg(group, signal.SIGTERM)
        time.sleep(KILL_AFTER_S)
        os.killpg(group, signal.SIGKILL)

    thread = threading.Thread(target=watch, name="supervisor-watch", daemon=True)
    thread.start()
    return thread


def main(run_id: int, log_path: Path) -> int:
    exit_with_supervisor()
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finetune_hub.settings")
    django.setup()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from experiments.models import TrainingRun
    from experiments.training import engine, reporting
    from finetune_hub.errors import ServiceError

    # A cancel (the supervisor's SIGTERM) stops training after the current step, so the
    # points logged before it are written; the supervisor kills what has not ended in
    # KILL_AFTER_S.
    signal.signal(signal.SIGTERM, lambda signum, frame: reporting.STOP.set())
    run = TrainingRun.objects.select_related("experiment__dataset_version").get(pk=run_id)
    try:
        engine.train(run, log_path)
    except ServiceError as exc:
        if reporting.rank() == 0:
            TrainingRun.objects.filter(pk=run_id).update(error=exc.detail)
        print(exc.detail, file=sys.stderr)
        return EXIT_REFUSED
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), Path(sys.argv[2])))
