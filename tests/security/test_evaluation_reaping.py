"""Guards against work lost or stuck when a worker process dies: an evaluation whose
worker is SIGKILLed (out-of-memory killer, host reboot) must not stay "running" forever
with its retry refused. The periodic reaper queues it again, and the next execution fills
in only the missing samples; after max_attempts it fails with a message; an evaluation
whose worker is alive is left alone, and a reaped execution that wakes up writes nothing."""

import os
import signal
import subprocess
import sys
from datetime import timedelta

import psutil
import pytest
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from evaluation.models import EvaluationRun
from evaluation.queue import CHUNK, evaluation_execute
from evaluation.services import evaluation_create, evaluation_retry
from evaluation.tasks import reap_stale_evaluations
from experiments.models import Worker
from experiments.tasks import STALE_AFTER
from experiments.training.supervisor import child_env
from finetune_hub.errors import ServiceError
from tests.support.training_helpers import make_version, wait_for

GEN = {"max_new_tokens": 8, "batch_size": CHUNK}  # one batch a chunk: fewer steps

# Runs evaluation_execute in a real process that stops itself (SIGSTOP) once its first
# chunk of samples is stored, so the test kills it mid-run at a known point.
CHILD = """
import os, signal, sys
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finetune_hub.settings")
django.setup()
from evaluation import queue
from inference import generation
real, calls = generation.generate, []
def generate(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGSTOP)
    return real(*args, **kwargs)
generation.generate = generate
queue.evaluation_execute(evaluation_id=int(sys.argv[1]))
"""


def reap() -> list[int]:
    """The periodic task, run as the consumer runs it."""
    return reap_stale_evaluations.call_local()


def create(team, owner, version, **kwargs):
    return evaluation_create(
        team=team,
        subject={"base_model": settings.DEFAULT_BASE_MODEL},  # the tiny test model
        dataset_version=version,
        split="train",
        metric_names=["exact_match", "loss"],
        generation_settings=GEN,
        by=owner,
        **kwargs,
    )


def start_child(evaluation) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(evaluation.pk)],
        cwd=settings.BASE_DIR,
        env=child_env(),  # this test's database and artifact root, as a training child gets
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stopped_after_first_chunk(child, evaluation) -> EvaluationRun:
    def stopped():
        assert child.poll() is None, "the evaluation process exited before its second chunk"
        return psutil.Process(child.pid).status() == psutil.STATUS_STOPPED

    wait_for(stopped)
    evaluation.refresh_from_db()
    assert evaluation.status == "running" and 0 < evaluation.samples_done < evaluation.samples_total
    return evaluation


def time_passes(evaluation, by=STALE_AFTER + timedelta(seconds=1)):
    """Nothing is heard from the evaluation or its worker for `by`."""
    EvaluationRun.objects.filter(pk=evaluation.pk).update(heartbeat_at=F("heartbeat_at") - by)
    Worker.objects.filter(pk=evaluation.worker_id).update(heartbeat_at=F("heartbeat_at") - by)


def outputs(evaluation):
    return list(evaluation.samples.order_by("position").values_list("prediction", "loss", "scores"))


@pytest.mark.django_db(transaction=True)
def test_sigkilled_evaluation_is_reaped_and_resumes_to_the_uninterrupted_result(team, owner):
    version = make_version(team, owner, n=50)
    assert version.counts["train"] > CHUNK  # more than one chunk: killed between two
    reference = evaluation_execute(evaluation_id=create(team, owner, version).pk)
    assert reference.status == "succeeded"

    evaluation = create(team, owner, version)
    child = start_child(evaluation)
    evaluation = stopped_after_first_chunk(child, evaluation)
    kept = evaluation.samples_done
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL

    assert reap() == []  # heard from moments ago: not yet taken for dead
    time_passes(evaluation)
    assert reap() == [evaluation.pk]
    evaluation.refresh_from_db()
    assert evaluation.status == "queued" and "No heartbeat" in evaluation.error
    assert evaluation.samples.count() == kept  # the samples already generated are kept
    assert reap() == []

    evaluation = evaluation_execute(evaluation_id=evaluation.pk)
    assert (evaluation.status, evaluation.attempt) == ("succeeded", 2)
    assert evaluation.samples.count() == evaluation.samples_total == reference.samples_total
    assert evaluation.results == reference.results
    assert outputs(evaluation) == outputs(reference)


@pytest.mark.django_db(transaction=True)
def test_a_reaped_execution_that_wakes_up_writes_nothing(team, owner):
    version = make_version(team, owner, n=50)
    evaluation = create(team, owner, version)
    child = start_child(evaluation)
    stale = stopped_after_first_chunk(child, evaluation)
    time_passes(stale)  # stopped, not dead: it looks the same from outside
    assert reap() == [evaluation.pk]
    evaluation = evaluation_execute(evaluation_id=evaluation.pk)
    assert (evaluation.status, evaluation.attempt) == ("succeeded", 2)

    os.kill(child.pid, signal.SIGCONT)
    assert child.wait(timeout=120) == 0
    after = EvaluationRun.objects.get(pk=evaluation.pk)
    assert (after.status, after.attempt, after.results) == ("succeeded", 2, evaluation.results)
    assert after.samples.count() == after.samples_total


def running(team, owner, *, worker, heard_ago, attempt=1):
    evaluation = create(team, owner, make_version(team, owner, n=20))
    EvaluationRun.objects.filter(pk=evaluation.pk).update(
        status="running",
        attempt=attempt,
        worker=worker,
        started_at=timezone.now() - heard_ago,
        heartbeat_at=timezone.now() - heard_ago,
    )
    return EvaluationRun.objects.get(pk=evaluation.pk)


@pytest.fixture
def dead_worker(cpu_worker):
    return Worker.objects.create(
        name="gone:1",
        host="gone",
        pid=1,
        memory_bytes=cpu_worker.memory_bytes,
        heartbeat_at=timezone.now() - timedelta(hours=1),
    )


def test_exhausted_attempts_fail_cleanly_with_a_message(team, owner, dead_worker):
    evaluation = running(team, owner, worker=dead_worker, heard_ago=timedelta(hours=1), attempt=3)
    assert reap() == [evaluation.pk]
    evaluation.refresh_from_db()
    assert evaluation.status == "failed" and evaluation.finished_at
    assert "No heartbeat since" in evaluation.error
    assert "gave up after 3 attempts" in evaluation.error
    assert "gone" not in evaluation.error  # host and PID are for site admins

    # A person may still try again: the retry gets one more attempt than it used.
    evaluation = evaluation_retry(evaluation=evaluation, by=owner)
    assert (evaluation.status, evaluation.max_attempts, evaluation.error) == ("queued", 4, "")


@pytest.mark.parametrize(
    "worker, heard_ago",
    [
        ("live", STALE_AFTER * 10),  # a long chunk on a worker that still beats
        ("dead", timedelta(seconds=5)),  # its own heartbeat is recent
    ],
)
def test_an_evaluation_heard_from_is_not_reaped(
    team, owner, cpu_worker, dead_worker, worker, heard_ago
):
    evaluation = running(
        team, owner, worker=cpu_worker if worker == "live" else dead_worker, heard_ago=heard_ago
    )
    assert reap() == []
    evaluation.refresh_from_db()
    assert (evaluation.status, evaluation.error) == ("running", "")
    with pytest.raises(ServiceError) as refused:
        evaluation_retry(evaluation=evaluation, by=owner)
    assert refused.value.status == 409


def test_retry_of_a_running_evaluation_whose_worker_died_is_accepted(team, owner, api, dead_worker):
    evaluation = running(team, owner, worker=dead_worker, heard_ago=timedelta(minutes=10))
    r = api.post(f"/api/evaluations/{evaluation.pk}/retry")
    assert r.status_code == 200, r.content
    assert (r.json()["status"], r.json()["attempt"]) == ("queued", 1)
    evaluation.refresh_from_db()
    assert evaluation.worker is None
    assert evaluation_execute(evaluation_id=evaluation.pk).status == "succeeded"


def test_the_evaluation_page_shows_the_attempt_and_why_it_was_requeued(
    team, owner, browser_client, dead_worker
):
    evaluation = running(team, owner, worker=dead_worker, heard_ago=timedelta(hours=1))
    reap()
    page = browser_client.get(f"/evaluations/{evaluation.pk}/").content.decode()
    assert 'id="attempt">1 / 3<' in page and "No heartbeat since" in page
    assert 'id="retry"' not in page  # queued again: nothing for a person to do
