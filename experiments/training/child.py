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

from experiments.training.lifeline import supervisor_alive_check

EXIT_REFUSED = 3  # a ServiceError: the run cannot be trained here (its message is stored)
KILL_AFTER_S = 10.0


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
