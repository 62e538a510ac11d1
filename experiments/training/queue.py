"""The training queue, as workers and reapers see it: dispatch a queue token when a run is
queued, claim the top run, finish it, queue it again after a crash, reap runs whose heartbeat
stopped. Every change of hands is a conditional UPDATE that must change exactly one row, so
two workers (or two reapers) never act on the same run. The user's commands (create, enqueue,
cancel, resume, reorder) are in services.py."""

from django.apps import apps
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from experiments import workers
from experiments.models import TrainingRun, Worker


def _task():
    """The Huey task that carries a queue token to a worker (experiments.tasks.train_next),
    as ExperimentsConfig.ready keeps it: its body runs this module's worker side, so this
    module does not import it."""
    return apps.get_app_config("experiments").train_next


def dispatch_on_commit() -> None:
    train_next = _task()
    # A rolled-back request enqueues nothing; a worker never sees an uncommitted run.
    transaction.on_commit(lambda: train_next())


def _queued_candidates():
    return TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED).order_by(
        "-priority", "queued_at", "pk"
    )


def run_claim(*, worker: Worker, run_id: int | None = None) -> TrainingRun | None:
    """Takes the highest-priority queued run this worker can hold now (or the one named),
    with the GPUs it needs: the first free ones of this host that are large enough. A run
    that needs more GPUs than are free stays queued and a smaller one behind it may go
    first. Claims of one host's workers take turns (a row lock on them: its GPUs are
    theirs together); the conditional UPDATE changes exactly one row for exactly one
    worker, and a worker that loses the race tries the next run."""
    candidates = _queued_candidates()
    if run_id is not None:
        candidates = candidates.filter(pk=run_id)
    with transaction.atomic():
        list(Worker.objects.select_for_update().filter(host=worker.host).values_list("pk"))
        held, live = workers.held_gpus(worker.host), None
        for run_id, estimates in candidates.values_list("pk", "experiment__estimate")[:20]:
            if problem := workers.fits(worker, estimates):
                live = live if live is not None else list(workers.live_workers())
                if not workers.any_fits(live, estimates):
                    # No live worker could ever hold it (one that could has gone since it was
                    # queued, or its estimate changed): fail it rather than let it wait.
                    TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.QUEUED).update(
                        status=TrainingRun.Status.FAILED,
                        finished_at=timezone.now(),
                        error=f"No live worker can take the run: it {problem}",
                    )
                continue  # another worker can hold it
            gpus = workers.gpus_to_take(worker, estimates, held)
            if gpus is None:
                continue  # waits for this host's GPUs to be freed
            claimed = TrainingRun.objects.filter(
                pk=run_id, status=TrainingRun.Status.QUEUED
            ).update(
                status=TrainingRun.Status.RUNNING,
                worker=worker,
                gpus=gpus,
                attempt=F("attempt") + 1,
                heartbeat_at=timezone.now(),
                started_at=timezone.now(),
                finished_at=None,
                cancel_requested=False,
                pid=None,
            )
            if claimed == 1:
                return TrainingRun.objects.select_related("experiment").get(pk=run_id)
    return None


def dispatch_if_waiting() -> None:
    """One queue token when runs wait: a run that ended freed its GPUs (or its thread), and
    a run skipped for want of GPUs has no token left."""
    if TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED).exists():
        dispatch_on_commit()


def runs_redispatch() -> int:
    """The database is the queue's truth; Huey only carries tokens that wake a worker. A
    token is lost when Redis restarts without persistence, when a dispatch fails during an
    outage, or when it was spent on a run that waited for GPUs: so every queued run gets a
    token of its own, counting those pending (a token claims whichever run is on top, so
    the count is what matters). Returns how many were sent."""
    train_next = _task()
    queued = TrainingRun.objects.filter(
        status=TrainingRun.Status.QUEUED, source=TrainingRun.Source.QUEUED
    ).count()
    pending = sum(isinstance(t, train_next.task_class) for t in train_next.huey.pending())
    for _ in range(queued - pending):
        train_next()
    return max(queued - pending, 0)


def run_finish(*, run: TrainingRun, status: str, error: str = "") -> TrainingRun:
    TrainingRun.objects.filter(pk=run.pk).update(
        status=status, error=error, finished_at=timezone.now(), pid=None, eta_seconds=None
    )
    run.refresh_from_db()
    return run


def run_requeue_or_fail(*, run: TrainingRun, reason: str) -> TrainingRun:
    """After a crash that was not the run's fault (the worker or the training process was
    killed): queue it again to resume from its last checkpoint, up to max_attempts."""
    run.refresh_from_db()
    if run.cancel_requested:
        return run_finish(run=run, status=TrainingRun.Status.CANCELLED, error=reason)
    if run.attempt >= run.max_attempts:
        return run_finish(
            run=run,
            status=TrainingRun.Status.FAILED,
            error=f"{reason}; gave up after {run.attempt} attempts",
        )
    with transaction.atomic():
        TrainingRun.objects.filter(pk=run.pk).update(
            status=TrainingRun.Status.QUEUED, error=reason, pid=None, worker=None, gpus=[]
        )
        dispatch_on_commit()
    run.refresh_from_db()
    return run


def runs_reap_stale(*, stale_after) -> list[int]:
    """Running runs whose heartbeat stopped (worker SIGKILLed, out of memory): resume them."""
    cutoff = timezone.now() - stale_after
    reaped = []
    # A tracked run has no worker here: its own process reports it and ends it.
    for run in TrainingRun.objects.filter(
        status=TrainingRun.Status.RUNNING,
        heartbeat_at__lt=cutoff,
        source=TrainingRun.Source.QUEUED,
    ):
        # The same conditional-update rule: only one reaper acts on a run.
        if TrainingRun.objects.filter(
            pk=run.pk, status=TrainingRun.Status.RUNNING, heartbeat_at__lt=cutoff
        ).update(heartbeat_at=timezone.now()):
            run_requeue_or_fail(
                run=run,
                reason=f"No heartbeat since {run.heartbeat_at:%H:%M:%S} UTC (worker died?)",
            )
            reaped.append(run.pk)
    return reaped
