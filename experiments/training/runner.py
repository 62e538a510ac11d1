"""What a worker does with a queue token: claim the top run it can hold, supervise it."""

import logging

from experiments import workers
from experiments.models import TrainingRun
from experiments.training import queue, supervisor

log = logging.getLogger(__name__)


def train_next_run(run_id: int | None = None, on_poll=None) -> TrainingRun | None:
    worker = workers.worker_heartbeat()
    run = queue.run_claim(worker=worker, run_id=run_id)
    if run is None:
        return None
    gpus = f" on GPUs {run.gpus}" if run.gpus else ""
    log.info("Training run %s (attempt %s) on %s%s", run.pk, run.attempt, worker, gpus)
    return supervisor.supervise(run, on_poll=on_poll)
