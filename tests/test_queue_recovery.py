"""The database is the queue's truth: a queued run or evaluation whose Huey token is gone (a
Redis restart without persistence, a dispatch that failed during an outage) gets one again
every minute and when a worker starts, whatever else is pending; a stuck queued evaluation
can be retried. The last test kills and restarts a real redis-server of its own under a
consumer with a queued run and a queued evaluation."""

import os
import signal
import socket
import subprocess
import time

import pytest
from huey.contrib.djhuey import HUEY

from evaluation import tasks as evaluation_tasks
from evaluation.models import EvaluationRun
from evaluation.queue import evaluation_execute, evaluations_redispatch
from evaluation.services import evaluation_create
from experiments import services
from experiments import tasks as experiment_tasks
from experiments.models import TrainingRun
from experiments.training.queue import runs_redispatch
from tests.support.registry_helpers import trained_run
from tests.support.training_helpers import make_experiment, wait_for


@pytest.fixture
def empty_queue():
    HUEY.flush()
    yield HUEY
    HUEY.flush()


def tokens(task) -> list:
    return [t for t in HUEY.pending() if isinstance(t, task.task_class)]


def queued_runs(team, owner, tiny_model, n: int) -> list[TrainingRun]:
    experiment = make_experiment(team, owner, tiny_model)
    return [services.run_enqueue(experiment=experiment, by=owner, dispatch=False) for _ in range(n)]


def lost_evaluation(team, owner, tiny_model) -> EvaluationRun:
    """A queued evaluation whose token was lost (the queue was emptied after it was sent)."""
    run = trained_run(team, owner, tiny_model, seed=4)
    evaluation = evaluation_create(
        team=team,
        subject={"run": run.pk},
        dataset_version=run.experiment.dataset_version,
        metric_names=["exact_match"],
        generation_settings={"max_new_tokens": 4},
        by=owner,
    )
    HUEY.flush()
    return evaluation


@pytest.mark.django_db(transaction=True)
def test_every_queued_run_gets_a_token_counting_those_pending(team, owner, tiny_model, empty_queue):
    queued_runs(team, owner, tiny_model, 3)
    experiment_tasks.train_next()  # one token survived the outage
    assert runs_redispatch() == 2 and len(tokens(experiment_tasks.train_next)) == 3
    assert runs_redispatch() == 0  # bounded: never more tokens than queued runs


@pytest.mark.django_db(transaction=True)
def test_the_minute_tick_redispatches_runs_and_evaluations_whatever_else_is_pending(
    team, owner, tiny_model, empty_queue
):
    """The tick used to redispatch only when nothing at all was pending, and the same tick
    had queued the evaluation reaper first: a lost token was never replaced."""
    [run] = queued_runs(team, owner, tiny_model, 1)
    evaluation = lost_evaluation(team, owner, tiny_model)
    evaluation_tasks.reap_stale_evaluations()  # the other periodic task, pending
    experiment_tasks.reap_stale_runs.call_local()
    evaluation_tasks.reap_stale_evaluations.call_local()
    assert len(tokens(experiment_tasks.train_next)) == 1
    assert [t.args for t in tokens(evaluation_tasks.evaluate)] == [(evaluation.pk,)]
    evaluation_tasks.reap_stale_evaluations.call_local()  # its token is pending: no second
    assert len(tokens(evaluation_tasks.evaluate)) == 1
    assert TrainingRun.objects.get(pk=run.pk).status == "queued"


@pytest.mark.django_db(transaction=True)
def test_a_starting_worker_redispatches_what_is_queued(team, owner, tiny_model, empty_queue):
    queued_runs(team, owner, tiny_model, 2)
    evaluation = lost_evaluation(team, owner, tiny_model)
    experiment_tasks.recover_lost_training_tokens()
    evaluation_tasks.recover_lost_evaluation_tokens()
    assert len(tokens(experiment_tasks.train_next)) == 2
    assert [t.args for t in tokens(evaluation_tasks.evaluate)] == [(evaluation.pk,)]
    assert evaluations_redispatch() == []


@pytest.mark.django_db(transaction=True)
def test_a_stuck_queued_evaluation_can_be_retried(
    team, owner, tiny_model, empty_queue, api, outsider_api
):
    evaluation = lost_evaluation(team, owner, tiny_model)
    assert outsider_api.post(f"/api/evaluations/{evaluation.pk}/retry").status_code == 404
    r = api.post(f"/api/evaluations/{evaluation.pk}/retry")
    assert r.status_code == 200 and r.json()["status"] == "queued"
    assert [t.args for t in tokens(evaluation_tasks.evaluate)] == [(evaluation.pk,)]


def test_a_succeeded_evaluation_keeps_no_error_of_an_earlier_attempt(team, owner, tiny_model):
    evaluation = lost_evaluation(team, owner, tiny_model)
    reaped = "No heartbeat since 10:00:00 UTC (worker died?)"
    EvaluationRun.objects.filter(pk=evaluation.pk).update(error=reaped, attempt=1)
    evaluation = evaluation_execute(evaluation_id=evaluation.pk)
    assert (evaluation.status, evaluation.error, evaluation.attempt) == ("succeeded", "", 2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server of the test's own, without persistence, as many sites run it."""

    def __init__(self):
        self.port = free_port()
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: self._answers(), timeout=10)

    def _answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            return True
        except OSError:
            return False

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.mark.skipif(
    not os.path.exists("/usr/bin/redis-server"), reason="redis-server is not installed"
)
@pytest.mark.single_db
@pytest.mark.django_db(transaction=True)
def test_a_redis_restart_loses_no_queued_run_or_evaluation(
    team,
    owner,
    tiny_model,
    consumers,  # noqa: F811 (the imported fixture)
):
    """Both queued while the consumer's Redis is down, their tokens lost with it (the
    tokens go to this process's queue, not the consumer's): after the restart the minute
    tick finds them in the database and both finish."""
    redis = RedisServer()
    redis.start()
    consumers(workers=2, REDIS_URL=redis.url)
    try:
        time.sleep(3)  # started, its startup recovery done on an empty database
        redis.kill()
        [run] = queued_runs(team, owner, tiny_model, 1)
        evaluation = lost_evaluation(team, owner, tiny_model)
        redis.start()  # empty: nothing survived
        ended = ("succeeded", "failed")
        run = wait_for(lambda: TrainingRun.objects.filter(pk=run.pk, status__in=ended).first(), 180)
        evaluation = wait_for(
            lambda: EvaluationRun.objects.filter(pk=evaluation.pk, status__in=ended).first(), 180
        )
        assert (run.status, evaluation.status) == ("succeeded", "succeeded"), (
            run.error,
            evaluation.error,
        )
    finally:
        redis.kill()
