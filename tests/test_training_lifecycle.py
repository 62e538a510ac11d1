"""Real training processes: cancel, crash, SIGKILL with the reaper, and resume."""

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from django.conf import settings
from django.db import connection

from experiments import services
from experiments.models import Checkpoint, MetricPoint
from experiments.services import experiment_create
from experiments.training import queue
from experiments.training.runner import train_next_run
from finetune_hub.storage import artifact_path
from tests.support.training_helpers import (
    FAST,
    LONG,
    adapter,
    assert_each_step_logged_once,
    make_experiment,
    make_version,
    queued_run,
    wait_for,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_cancel_stops_the_process_and_keeps_the_last_checkpoint(
    team, owner, tiny_model, cpu_worker
):
    experiment = make_experiment(team, owner, tiny_model, **{**LONG, "max_steps": 5000})
    run = services.run_enqueue(experiment=experiment, by=owner, dispatch=False)

    def cancel_after_first_checkpoint(current):
        if current.checkpoints.exists() and not current.cancel_requested:
            services.run_cancel(run=current, by=owner)

    run = train_next_run(run_id=run.pk, on_poll=cancel_after_first_checkpoint)
    assert run.status == "cancelled" and "last checkpoint kept" in run.error
    last = run.checkpoints.order_by("-step").first()
    assert last and artifact_path(last.path).exists() and run.step < 5000
    assert run.pid is None and run.finished_at
    # The training process stopped after its step and wrote what it had logged: the curve
    # reaches the step the run ended at (it used to stop at the last 2-second flush).
    last_loss = MetricPoint.objects.filter(run=run, key="loss").order_by("-step").first()
    logging_steps = run.experiment.hyperparameters["logging_steps"]
    assert last_loss and run.step - last_loss.step < logging_steps
    assert not run.output_path  # no final output for a cancelled run
    # A resume clears the cancelled message and keeps the whole crash budget.
    resumed = services.run_resume(run=run, by=owner)
    assert resumed.error == "" and resumed.max_attempts == resumed.attempt + 3


def test_a_crash_fails_the_run_with_the_error_and_log_lines(
    team, owner, tiny_model, cpu_worker, model_root
):
    broken = model_root / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    version = make_version(team, owner)
    experiment = experiment_create(
        team=team,
        name="broken",
        dataset_version=version,
        base_model=str(broken),
        technique="lora",
        hyperparameters=FAST,
        by=owner,
    )
    run = services.run_enqueue(experiment=experiment, by=owner, dispatch=False)
    run = train_next_run(run_id=run.pk)
    assert run.status == "failed" and run.attempt == 1
    assert "Training failed (exit 1)" in run.error and "Traceback" in run.error


def test_worker_sigkill_reaper_and_resume_match_an_uninterrupted_run(
    team, owner, tiny_model, cpu_worker
):
    version = make_version(team, owner)
    experiments = [
        experiment_create(
            team=team,
            name=f"e{i}",
            dataset_version=version,
            base_model=tiny_model,
            technique="lora",
            hyperparameters=LONG,
            by=owner,
        )
        for i in range(2)
    ]
    reference = train_next_run(
        run_id=services.run_enqueue(experiment=experiments[0], by=owner, dispatch=False).pk
    )
    assert reference.status == "succeeded"

    run = services.run_enqueue(experiment=experiments[1], by=owner, dispatch=False)
    env = dict(
        os.environ,
        FINETUNE_HUB_DB_NAME=str(connection.settings_dict["NAME"]),
        ARTIFACT_ROOT=str(settings.ARTIFACT_ROOT),
        MODEL_CACHE_DIR=str(settings.MODEL_CACHE_DIR),
    )
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "train", "--run", str(run.pk)],
        cwd=settings.BASE_DIR,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = wait_for(lambda: Checkpoint.objects.filter(run=run).first())
    run.refresh_from_db()
    os.kill(worker.pid, signal.SIGKILL)  # the worker dies first, as with the OOM killer
    os.killpg(run.pid, signal.SIGKILL)
    worker.wait()
    run.refresh_from_db()
    assert run.status == "running" and run.step < 150

    assert queue.runs_reap_stale(stale_after=timedelta(0)) == [run.pk]
    run.refresh_from_db()
    assert run.status == "queued" and "No heartbeat" in run.error
    run = train_next_run(run_id=run.pk)
    assert (run.status, run.step, run.attempt) == ("succeeded", 150, 2)
    assert checkpoint.step < 150

    # Same data order and optimizer/RNG state: the resumed run ends where the other does.
    a, b = adapter(reference), adapter(run)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)
    assert_each_step_logged_once(reference)
    assert_each_step_logged_once(run)


@pytest.mark.single_db
def test_resumed_runs_after_a_process_kill_or_a_cancel_equal_an_uninterrupted_one(
    team, owner, tiny_model, cpu_worker, browser_client
):
    """Kill the training process alone (the supervisor lives on) or cancel: either way the
    resumed run ends with the adapter an uninterrupted run has, and the run page shows the
    cancelled state and the attempts as they are."""
    version = make_version(team, owner)
    short = {**LONG, "max_steps": 40}

    def queued(name):
        return queued_run(team, owner, tiny_model, version, name, short)

    reference = train_next_run(run_id=queued("reference").pk)

    def kill_process(current):
        if current.checkpoints.exists() and current.pid:
            os.killpg(current.pid, signal.SIGKILL)

    killed = train_next_run(run_id=queued("killed").pk, on_poll=kill_process)
    assert killed.status == "queued" and killed.attempt == 1
    assert "killed by SIGKILL (out of memory?)" in killed.error
    killed = train_next_run(run_id=killed.pk)

    def cancel(current):
        if current.checkpoints.exists() and not current.cancel_requested:
            services.run_cancel(run=current, by=owner)

    cancelled = train_next_run(run_id=queued("cancelled").pk, on_poll=cancel)
    assert cancelled.status == "cancelled" and cancelled.step < short["max_steps"]
    page = browser_client.get(f"/runs/{cancelled.pk}/").content.decode()
    assert (
        'id="status">cancelled<' in page and 'id="attempt">1 / 3<' in page and 'id="resume"' in page
    )
    services.run_resume(run=cancelled, by=owner)
    cancelled = train_next_run(run_id=cancelled.pk)

    for run in (killed, cancelled):
        assert (run.status, run.step, run.attempt) == ("succeeded", short["max_steps"], 2)
        assert_each_step_logged_once(run)
        a, b = adapter(reference), adapter(run)
        assert a.keys() == b.keys()
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)
    page = browser_client.get(f"/runs/{cancelled.pk}/").content.decode()
    # The resume after the cancel gave the run its three crash attempts again: 2 of 4.
    assert 'id="status">succeeded<' in page and 'id="attempt">2 / 4<' in page


WATCHED_CHILD = """
import sys, time
from experiments.training.child import exit_with_supervisor
exit_with_supervisor(interval=0.1)
print("watching", flush=True)
time.sleep(120)
"""

SUPERVISOR = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], start_new_session=True,
                         stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "watching"
print(child.pid, flush=True)
time.sleep(120)
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent's wait is missing


ROOT = Path(__file__).resolve().parent.parent


def test_a_training_process_stops_when_its_supervisor_is_killed():
    """SIGKILL the supervisor (the worker): the training process it started in its own
    session notices and exits, instead of training on beside the run's next attempt."""
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, WATCHED_CHILD],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    child = int(supervisor.stdout.readline())
    assert _running(child)
    supervisor.kill()
    supervisor.wait()
    deadline = time.monotonic() + 10
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(child)
