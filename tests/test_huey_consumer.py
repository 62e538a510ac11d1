"""The Huey layer for real: a consumer process (SqliteHuey here, RedisHuey in the PostgreSQL
pass) takes a queued training run and an evaluation from the queue, and after a consumer and
its training process are killed, the periodic reaper of a new consumer (not a direct call)
puts the run back in the queue, where it resumes to success."""

import os
import signal
import time

import pytest

from evaluation.models import EvaluationRun
from evaluation.services import evaluation_create
from experiments import services
from experiments.models import TrainingRun
from finetune_hub.storage import artifact_path
from tests.support.training_helpers import assert_each_step_logged_once, make_experiment, wait_for

LONG = {"max_steps": 80, "save_steps": 10, "eval_steps": 1000, "logging_steps": 10}


def status_of(model, pk, *wanted):
    return lambda: model.objects.filter(pk=pk, status__in=wanted).first()


@pytest.mark.django_db(transaction=True)
def test_a_consumer_trains_evaluates_and_its_reaper_resumes_a_killed_run(
    team, owner, tiny_model, consumers
):
    first = consumers()
    experiment = make_experiment(team, owner, tiny_model)
    run = services.run_enqueue(experiment=experiment, by=owner)  # dispatched on commit
    run = wait_for(status_of(TrainingRun, run.pk, "succeeded", "failed"), timeout=300)
    assert run.status == "succeeded", run.error

    evaluation = evaluation_create(
        team=team,
        subject={"run": run.pk},
        dataset_version=experiment.dataset_version,
        metric_names=["exact_match"],
        generation_settings={"max_new_tokens": 4, "batch_size": 8},
        by=owner,
    )
    evaluation = wait_for(
        status_of(EvaluationRun, evaluation.pk, "succeeded", "failed"), timeout=300
    )
    assert evaluation.status == "succeeded", evaluation.error
    assert evaluation.worker is not None and evaluation.samples.exists()

    long = make_experiment(team, owner, tiny_model, **LONG)
    victim = services.run_enqueue(experiment=long, by=owner)
    victim = wait_for(
        lambda: TrainingRun.objects.filter(
            pk=victim.pk, status="running", checkpoints__isnull=False
        ).first(),
        timeout=300,
    )
    os.killpg(first.pid, signal.SIGKILL)  # the consumer and its heartbeat thread
    os.killpg(victim.pid, signal.SIGKILL)  # and the training process it supervised
    first.wait()
    time.sleep(4)  # silent for longer than STALE_AFTER_S
    assert TrainingRun.objects.get(pk=victim.pk).status == "running"  # nobody noticed yet

    consumers()  # its periodic reaper runs at start and every minute
    finished = status_of(TrainingRun, victim.pk, "succeeded", "failed")
    try:
        victim = wait_for(finished, timeout=400)
    except AssertionError:
        victim = TrainingRun.objects.get(pk=victim.pk)
        pytest.fail(
            f"run {victim.status} at step {victim.step}, attempt {victim.attempt}: {victim.error}"
        )
    assert victim.status == "succeeded", victim.error
    # Only the reaper could queue it again: its consumer and its process were dead.
    assert victim.attempt == 2 and victim.step == LONG["max_steps"]
    assert_each_step_logged_once(victim)
    log = (artifact_path(victim.folder) / "train.log").read_text()
    assert "--- attempt 2 at" in log
