"""One run on several processes (torchrun, DDP over gloo on this CPU machine, NCCL on GPUs):
it trains, every rank stops on a cancel, a killed rank queues the whole run again, and the
resumed run ends equal to an uninterrupted one."""

import signal

import psutil
import pytest
import torch

from experiments import services
from experiments.models import TrainingRun
from experiments.training.runner import train_next_run
from tests.support.training_helpers import LONG, adapter, make_version, queued_run

pytestmark = pytest.mark.django_db(transaction=True)
# Long enough after the first checkpoint (step 4) that a cancel or a kill sent at the next
# poll (1 s) lands before the last step: on an idle machine 16 steps once finished first.
STEPS = 60
TWO = {**LONG, "max_steps": STEPS, "save_steps": 4, "logging_steps": 2, "gpus": 2}


def ranks(run: TrainingRun) -> list[psutil.Process]:
    """The training processes torchrun started for the run (its agent's children)."""
    if not run.pid:
        return []
    try:
        return [p for p in psutil.Process(run.pid).children() if "child" in " ".join(p.cmdline())]
    except psutil.Error:
        return []


@pytest.mark.single_db
def test_a_two_process_run_trains_cancels_resumes_and_equals_an_uninterrupted_one(
    team, owner, tiny_model, cpu_worker
):
    version = make_version(team, owner)

    def queued(name):
        return queued_run(team, owner, tiny_model, version, name, TWO)

    seen: list[int] = []

    def count_ranks(current):
        seen.append(len(ranks(current)))

    reference = train_next_run(run_id=queued("reference").pk, on_poll=count_ranks)
    assert (reference.status, reference.step) == ("succeeded", STEPS), reference.error
    assert max(seen) == 2  # two training processes under torchrun
    assert reference.output_files and not reference.gpus  # a CPU worker holds no GPU
    assert "Data parallel over 2 processes (gloo); global batch 4" in reference.log_tail

    def cancel(current):
        if current.checkpoints.exists() and not current.cancel_requested:
            services.run_cancel(run=current, by=owner)

    cancelled = train_next_run(run_id=queued("cancelled").pk, on_poll=cancel)
    assert cancelled.status == "cancelled" and cancelled.step < STEPS, cancelled.error
    assert "last checkpoint kept" in cancelled.error
    services.run_resume(run=cancelled, by=owner)
    cancelled = train_next_run(run_id=cancelled.pk)
    assert (cancelled.status, cancelled.step, cancelled.attempt) == ("succeeded", STEPS, 2)

    def kill_one_rank(current):
        if current.checkpoints.exists() and (alive := ranks(current)):
            alive[-1].send_signal(signal.SIGKILL)

    killed = train_next_run(run_id=queued("rank-killed").pk, on_poll=kill_one_rank)
    # torchrun stops the other rank; the run is queued again to resume, not hung or failed.
    assert killed.status == "queued" and killed.attempt == 1, killed.error
    assert killed.error == "A training process was killed by SIGKILL (out of memory?)"
    killed = train_next_run(run_id=killed.pk)
    assert (killed.status, killed.step, killed.attempt) == ("succeeded", STEPS, 2)

    for run in (cancelled, killed):
        a, b = adapter(reference), adapter(run)
        assert a.keys() == b.keys()
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)
