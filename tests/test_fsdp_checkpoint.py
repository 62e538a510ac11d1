"""FSDP checkpoints are safetensors and resume on any number of GPUs: a model sharded with
FSDP2 over gloo processes on this CPU machine (accelerate enables FSDP only on GPUs, so the
Trainer's own FSDP run is measured on the GPU machine: bench/scale_out.py) is saved through
SafetensorsCheckpointMixin's full-state-dict path and loaded back on 2 and on 1 process."""

import os
import subprocess
import sys

import pytest
from django.conf import settings

SCRIPT = settings.BASE_DIR / "tests" / "support" / "fsdp_checkpoint_script.py"


def torchrun(processes: int, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(settings.BASE_DIR), OMP_NUM_THREADS="1")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={processes}",
            str(SCRIPT),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.single_db
def test_fsdp_checkpoint_resumes_exactly_on_any_number_of_processes(tmp_path):
    """Saved on 2 processes; loaded on 2 (rank 0 reads, rank 1 gets its shard over the
    wire) and on 1: the weights and every optimizer moment and step count are the saved
    ones, and the next step equals the step the saving run took (to float rounding)."""
    folder = tmp_path / "checkpoint-3"
    torchrun(2, "save", str(folder))
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "model.safetensors",
        "optimizer.json",
        "optimizer.safetensors",
        "scheduler.json",
    ]
    assert '"keys": "name"' in (folder / "optimizer.json").read_text()  # by parameter name
    for processes in (2, 1):
        assert f"resumed on {processes} ranks" in torchrun(processes, "load", str(folder))
