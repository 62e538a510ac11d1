"""What a worker does with a queue token: claim the top run, check it fits, supervise it."""

import logging

from experiments.models import TrainingRun
from experiments.training import queue, supervisor, workers

log = logging.getLogger(__name__)


def train_next_run(run_id: int | None = None, on_poll=None) -> TrainingRun | None:
    worker = workers.worker_heartbeat()
    run = queue.run_claim(worker=worker, run_id=run_id)
    if run is None:
        return None
    if problem := workers.fits(worker, run.experiment.estimate):
        log.warning("Run %s cannot train on %s: %s", run.pk, worker, problem)
        return queue.run_finish(
            run=run,
            status=TrainingRun.Status.FAILED,
            error=f"This worker cannot take the run: {problem}",
        )
    log.info("Training run %s (attempt %s) on %s", run.pk, run.attempt, worker)
    return supervisor.supervise(run, on_poll=on_poll)
