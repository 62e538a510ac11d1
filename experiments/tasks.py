"""Huey tasks: thin wrappers that call a service (imports inside, as the HackSoft guide does)."""

import threading
import time
from datetime import timedelta

from django.conf import settings
from huey import crontab
from huey.contrib.djhuey import db_periodic_task, db_task, on_startup

HEARTBEAT_S = 15
# A running run or evaluation silent for this long is reaped (its worker or process died).
STALE_AFTER = timedelta(seconds=settings.STALE_AFTER_S)


@db_task()
def train_next():
    from experiments.training.runner import train_next_run

    train_next_run()


@db_periodic_task(crontab(minute="*"))
def reap_stale_runs():
    from experiments.training.queue import runs_reap_stale, runs_redispatch

    reaped = runs_reap_stale(stale_after=STALE_AFTER)
    runs_redispatch()  # a token lost with Redis, or spent while the run waited for GPUs
    return reaped


def _beat_forever():
    from django.db import close_old_connections

    from experiments.workers import local_devices, worker_heartbeat

    devices = local_devices()
    while True:
        close_old_connections()
        worker_heartbeat(devices)
        time.sleep(HEARTBEAT_S)


@on_startup()
def recover_lost_training_tokens():
    """A worker that starts after a Redis restart finds the queued runs at once, not at the
    next minute."""
    from django.db import close_old_connections

    from experiments.training.queue import runs_redispatch

    runs_redispatch()
    close_old_connections()


@on_startup()
def report_worker():
    threading.Thread(target=_beat_forever, name="worker-heartbeat", daemon=True).start()
