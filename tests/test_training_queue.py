"""The training queue's decisions, one rule per test, without a training process: which run
a worker claims and what the claim writes; what finishing, requeueing, reaping, cancelling,
resuming and reordering do to a run. The lifecycle tests drive the same functions through
real processes; these pin every field and boundary, quickly enough for mutation testing."""

from datetime import timedelta
from unittest import mock

import pytest
from django.apps import apps
from django.utils import timezone

from experiments import services
from experiments.models import TrainingRun, Worker
from experiments.training import queue
from finetune_hub.errors import Conflict, NotFound, ServiceError
from tests.support.training_helpers import make_experiment

Status = TrainingRun.Status


@pytest.fixture
def experiment(team, owner, tiny_model):
    return make_experiment(team, owner, tiny_model)


@pytest.fixture
def worker(db):
    return Worker.objects.create(
        name="host:1", host="host", pid=1, memory_bytes=10**10, heartbeat_at=timezone.now()
    )


@pytest.fixture
def add_run(experiment, owner):
    def add(**fields):
        return TrainingRun.objects.create(experiment=experiment, created_by=owner, **fields)

    return add


@pytest.fixture
def dispatched():
    """train_next() calls, made when the enclosing transaction commits."""
    with mock.patch.object(apps.get_app_config("experiments"), "train_next") as train_next:
        yield train_next


# --- claim ---------------------------------------------------------------------------


def test_claim_takes_the_highest_priority_then_the_oldest_run(add_run, worker):
    old_low = add_run(priority=0)
    high = add_run(priority=5)
    new_low = add_run(priority=0)
    negative = add_run(priority=-1)
    order = [queue.run_claim(worker=worker).pk for _ in range(4)]
    assert order == [high.pk, old_low.pk, new_low.pk, negative.pk]
    assert queue.run_claim(worker=worker) is None


def test_claim_breaks_a_queued_at_tie_by_id(add_run, worker):
    first, second = add_run(), add_run()
    same = timezone.now()
    TrainingRun.objects.update(queued_at=same)
    assert queue.run_claim(worker=worker).pk == first.pk
    assert queue.run_claim(worker=worker).pk == second.pk


def test_claim_writes_the_worker_the_attempt_and_clears_the_last_attempts_state(add_run, worker):
    before = timezone.now()
    run = add_run(
        attempt=1, cancel_requested=True, pid=4242, finished_at=before - timedelta(hours=1)
    )
    claimed = queue.run_claim(worker=worker)
    assert claimed.pk == run.pk
    assert claimed.status == Status.RUNNING
    assert claimed.worker_id == worker.pk
    assert claimed.attempt == 2
    assert claimed.cancel_requested is False
    assert claimed.pid is None
    assert claimed.finished_at is None
    assert before <= claimed.started_at <= timezone.now()
    assert before <= claimed.heartbeat_at <= timezone.now()
    # The returned run comes with its experiment (the worker reads it at once).
    assert claimed.experiment.pk == run.experiment_id


def test_claim_of_a_named_run_takes_only_that_run(add_run, worker):
    high = add_run(priority=9)
    named = add_run()
    assert queue.run_claim(worker=worker, run_id=named.pk).pk == named.pk
    # Named again: it is running now, so nothing is claimed, and the other run stays queued.
    assert queue.run_claim(worker=worker, run_id=named.pk) is None
    high.refresh_from_db()
    assert high.status == Status.QUEUED


@pytest.mark.parametrize("status", [Status.RUNNING, Status.SUCCEEDED, Status.FAILED])
def test_claim_ignores_runs_that_are_not_queued(add_run, worker, status):
    add_run(status=status)
    assert queue.run_claim(worker=worker) is None


def test_a_worker_that_loses_the_race_for_a_run_takes_the_next(add_run, worker, owner):
    """Between listing the candidates and the conditional UPDATE another worker claims the
    first: the UPDATE changes no row and the claim moves on to the next candidate."""
    first, second = add_run(priority=1), add_run()
    other = Worker.objects.create(
        name="host:2", host="host", pid=2, memory_bytes=10**10, heartbeat_at=timezone.now()
    )
    real_filter = TrainingRun.objects.filter
    raced = []

    def filter_then_race(*args, **kwargs):
        if kwargs.get("pk") == first.pk and "status" in kwargs and not raced:
            raced.append(True)
            real_filter(pk=first.pk).update(status=Status.RUNNING, worker=other)
        return real_filter(*args, **kwargs)

    with mock.patch.object(TrainingRun.objects, "filter", side_effect=filter_then_race):
        claimed = queue.run_claim(worker=worker)
    assert raced and claimed.pk == second.pk
    first.refresh_from_db()
    assert first.worker_id == other.pk  # the winner's claim is untouched


# --- finish and requeue ----------------------------------------------------------------


def test_finish_records_the_outcome_and_clears_the_process(add_run):
    run = add_run(status=Status.RUNNING, pid=99, eta_seconds=12.5)
    before = timezone.now()
    finished = queue.run_finish(run=run, status=Status.FAILED, error="out of memory")
    assert (finished.status, finished.error, finished.pid, finished.eta_seconds) == (
        Status.FAILED,
        "out of memory",
        None,
        None,
    )
    assert before <= finished.finished_at <= timezone.now()
    stored = TrainingRun.objects.get(pk=run.pk)
    assert (stored.status, stored.error, stored.pid) == (Status.FAILED, "out of memory", None)


def test_finish_without_an_error_stores_an_empty_one(add_run):
    run = add_run(status=Status.RUNNING, error="an earlier attempt's error")
    assert queue.run_finish(run=run, status=Status.SUCCEEDED).error == ""


def test_requeue_queues_a_crashed_run_again_while_attempts_remain(
    add_run, worker, dispatched, django_capture_on_commit_callbacks
):
    run = add_run(status=Status.RUNNING, attempt=2, max_attempts=3, pid=7, worker=worker)
    with django_capture_on_commit_callbacks(execute=True):
        requeued = queue.run_requeue_or_fail(run=run, reason="worker killed")
    assert (requeued.status, requeued.error, requeued.pid, requeued.worker_id) == (
        Status.QUEUED,
        "worker killed",
        None,
        None,
    )
    assert requeued.finished_at is None
    dispatched.assert_called_once_with()


def test_requeue_gives_up_at_the_last_attempt(
    add_run, dispatched, django_capture_on_commit_callbacks
):
    run = add_run(status=Status.RUNNING, attempt=3, max_attempts=3, pid=7)
    with django_capture_on_commit_callbacks(execute=True):
        failed = queue.run_requeue_or_fail(run=run, reason="worker killed")
    assert failed.status == Status.FAILED
    assert failed.error == "worker killed; gave up after 3 attempts"
    assert failed.finished_at is not None and failed.pid is None
    dispatched.assert_not_called()


def test_requeue_of_a_run_whose_cancel_was_requested_cancels_it(
    add_run, dispatched, django_capture_on_commit_callbacks
):
    run = add_run(status=Status.RUNNING, attempt=1, max_attempts=3)
    TrainingRun.objects.filter(pk=run.pk).update(cancel_requested=True)  # by another process
    with django_capture_on_commit_callbacks(execute=True):
        cancelled = queue.run_requeue_or_fail(run=run, reason="training process exited")
    assert (cancelled.status, cancelled.error) == (Status.CANCELLED, "training process exited")
    assert cancelled.finished_at is not None
    dispatched.assert_not_called()


# --- reaping ---------------------------------------------------------------------------


def test_reaping_requeues_exactly_the_running_runs_whose_heartbeat_stopped(
    add_run, dispatched, django_capture_on_commit_callbacks
):
    now = timezone.now()
    stale_after = timedelta(seconds=120)
    stale = add_run(status=Status.RUNNING, attempt=1, heartbeat_at=now - timedelta(seconds=125))
    fresh = add_run(status=Status.RUNNING, attempt=1, heartbeat_at=now - timedelta(seconds=115))
    queued = add_run(status=Status.QUEUED, heartbeat_at=now - timedelta(days=1))
    failed = add_run(status=Status.FAILED, heartbeat_at=now - timedelta(days=1))
    last = add_run(
        status=Status.RUNNING, attempt=3, max_attempts=3, heartbeat_at=now - timedelta(hours=1)
    )
    with django_capture_on_commit_callbacks(execute=True):
        reaped = queue.runs_reap_stale(stale_after=stale_after)
    assert sorted(reaped) == sorted([stale.pk, last.pk])
    statuses = {r.pk: r.status for r in TrainingRun.objects.all()}
    assert statuses == {
        stale.pk: Status.QUEUED,
        fresh.pk: Status.RUNNING,
        queued.pk: Status.QUEUED,
        failed.pk: Status.FAILED,
        last.pk: Status.FAILED,
    }
    stale.refresh_from_db()
    assert stale.error.startswith("No heartbeat since ")
    assert stale.error.endswith(" UTC (worker died?)")
    assert dispatched.call_count == 1  # the requeued run only
    # A second reaper in the same minute finds nothing left to do.
    assert queue.runs_reap_stale(stale_after=stale_after) == []


def test_a_run_another_reaper_took_is_not_reaped_twice(add_run):
    now = timezone.now()
    run = add_run(status=Status.RUNNING, attempt=1, heartbeat_at=now - timedelta(hours=1))
    real_filter = TrainingRun.objects.filter
    calls = []

    def filter_then_race(*args, **kwargs):
        result = real_filter(*args, **kwargs)
        if "pk" in kwargs and not calls:
            calls.append(True)
            real_filter(pk=run.pk).update(heartbeat_at=timezone.now())  # the other reaper
        return result

    with mock.patch.object(TrainingRun.objects, "filter", side_effect=filter_then_race):
        assert queue.runs_reap_stale(stale_after=timedelta(seconds=60)) == []
    run.refresh_from_db()
    assert (run.status, run.attempt) == (Status.RUNNING, 1)


def test_a_run_that_finished_meanwhile_is_not_reaped(add_run):
    """Between the reaper's list and its conditional UPDATE the run finishes (its last
    heartbeat was old): the UPDATE must not match it, or a finished run would be queued."""
    now = timezone.now()
    run = add_run(status=Status.RUNNING, attempt=1, heartbeat_at=now - timedelta(hours=1))
    real_filter = TrainingRun.objects.filter
    finished = []

    def filter_then_finish(*args, **kwargs):
        if "pk" in kwargs and not finished:
            finished.append(True)
            real_filter(pk=run.pk).update(status=Status.SUCCEEDED)  # the worker's last write
        return real_filter(*args, **kwargs)

    with mock.patch.object(TrainingRun.objects, "filter", side_effect=filter_then_finish):
        assert queue.runs_reap_stale(stale_after=timedelta(seconds=60)) == []
    run.refresh_from_db()
    assert (run.status, run.error) == (Status.SUCCEEDED, "")


# --- cancel, resume, priority ------------------------------------------------------------


def test_cancelling_a_queued_run_finishes_it(add_run, owner):
    run = add_run()
    cancelled = services.run_cancel(run=run, by=owner)
    assert (cancelled.status, cancelled.error) == (Status.CANCELLED, "Cancelled while queued")
    assert cancelled.finished_at is not None


def test_cancelling_a_running_run_asks_its_supervisor(add_run, owner):
    run = add_run(status=Status.RUNNING, attempt=1)
    flagged = services.run_cancel(run=run, by=owner)
    assert (flagged.status, flagged.cancel_requested) == (Status.RUNNING, True)
    assert TrainingRun.objects.get(pk=run.pk).cancel_requested is True


@pytest.mark.parametrize("status", TrainingRun.FINISHED)
def test_a_finished_run_cannot_be_cancelled(add_run, owner, status):
    run = add_run(status=status)
    with pytest.raises(Conflict, match=f"The run is {status} already"):
        services.run_cancel(run=run, by=owner)


def test_an_outsider_cannot_cancel_resume_or_reorder(add_run, outsider):
    run = add_run()
    for action in (
        lambda: services.run_cancel(run=run, by=outsider),
        lambda: services.run_resume(run=run, by=outsider),
        lambda: services.run_set_priority(run=run, priority=1, by=outsider),
    ):
        with pytest.raises(NotFound):
            action()
    run.refresh_from_db()
    assert (run.status, run.priority) == (Status.QUEUED, 0)


@pytest.mark.parametrize("status", [Status.FAILED, Status.CANCELLED])
def test_resume_queues_a_stopped_run_with_its_whole_crash_budget(
    add_run, owner, status, dispatched, django_capture_on_commit_callbacks
):
    run = add_run(
        status=status, attempt=3, max_attempts=3, cancel_requested=True, finished_at=timezone.now()
    )
    with django_capture_on_commit_callbacks(execute=True):
        resumed = services.run_resume(run=run, by=owner)
    assert (resumed.status, resumed.cancel_requested, resumed.finished_at) == (
        Status.QUEUED,
        False,
        None,
    )
    # A resume is not a crash retry: three more attempts from here, as a new run gets.
    assert resumed.max_attempts == 6 and resumed.error == ""
    assert TrainingRun.objects.get(pk=run.pk).max_attempts == 6
    dispatched.assert_called_once_with()


def test_resume_keeps_a_higher_attempt_budget(add_run, owner, dispatched):
    run = add_run(status=Status.FAILED, attempt=1, max_attempts=5)
    assert services.run_resume(run=run, by=owner).max_attempts == 5


@pytest.mark.parametrize("status", [Status.QUEUED, Status.RUNNING, Status.SUCCEEDED])
def test_only_a_failed_or_cancelled_run_resumes(add_run, owner, status):
    run = add_run(status=status)
    with pytest.raises(Conflict, match=f"this one is {status}"):
        services.run_resume(run=run, by=owner)


@pytest.mark.parametrize("priority", [-1000, 0, 1000])
def test_priority_within_bounds_is_set(add_run, owner, priority):
    run = add_run()
    assert services.run_set_priority(run=run, priority=priority, by=owner).priority == priority


@pytest.mark.parametrize("priority", [-1001, 1001])
def test_priority_out_of_bounds_names_the_field(add_run, owner, priority):
    run = add_run()
    with pytest.raises(ServiceError) as refused:
        services.run_set_priority(run=run, priority=priority, by=owner)
    assert refused.value.status == 422
    assert [(e.field, e.message) for e in refused.value.errors] == [
        ("priority", "between -1000 and 1000")
    ]
    run.refresh_from_db()
    assert run.priority == 0


def test_only_a_queued_run_is_reordered(add_run, owner):
    run = add_run(status=Status.RUNNING)
    with pytest.raises(Conflict, match="Only a queued run can be reordered"):
        services.run_set_priority(run=run, priority=3, by=owner)


def test_enqueue_refuses_an_out_of_bounds_priority_and_writes_nothing(experiment, owner):
    with pytest.raises(ServiceError):
        services.run_enqueue(experiment=experiment, by=owner, priority=5000, dispatch=False)
    assert not TrainingRun.objects.exists()
