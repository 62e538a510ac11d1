"""One metric point a (key, step), resumed or not, checked on the reporter itself without
training (tests/test_training_lifecycle.py's assert_each_step_logged_once checks real runs,
killed, cancelled and resumed). The trainer puts the epoch in every log of a step, and a
resumed attempt evaluated its checkpoint again on start: the epoch was written two or three
times at those steps (issue 27)."""

import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from experiments import metric_store
from experiments.models import Checkpoint, MetricPoint, TrainingRun
from experiments.training import speed, trainer
from experiments.training.reporting import RunReporter
from finetune_hub.storage import artifact_path
from tests.support.training_helpers import make_experiment

TRAINING_LOG = {"loss": 2.0, "learning_rate": 1e-3, "grad_norm": 0.5}


@pytest.fixture
def run(team, owner, tiny_model):
    return TrainingRun.objects.create(
        experiment=make_experiment(team, owner, tiny_model), created_by=owner
    )


def reporter_at(run, step: int):
    """A reporter whose attempt starts at `step` (0: the first attempt; more: resumed from
    the checkpoint of that step)."""
    reporter = RunReporter(run, log_path=Path(metric_store.__file__))
    state = SimpleNamespace(global_step=step, max_steps=20, num_input_tokens_seen=0)
    reporter.on_train_begin(None, state, None)
    return reporter, state


def log(reporter, state, step: int, **logs):
    state.global_step = step
    reporter.on_log(None, state, None, logs=logs)


def points(run) -> Counter:
    return Counter(MetricPoint.objects.filter(run=run).values_list("key", "step"))


def test_the_epoch_of_a_step_is_one_point_whatever_logs_carry_it(run):
    reporter, state = reporter_at(run, 0)
    log(reporter, state, 0, eval_loss=3.0, epoch=0.0)  # the evaluation on start
    log(reporter, state, 5, **TRAINING_LOG, epoch=0.5)
    log(reporter, state, 5, eval_loss=2.5, epoch=0.5)  # an evaluation at a logging step
    log(reporter, state, 10, **TRAINING_LOG, epoch=1.0)
    log(reporter, state, 10, train_runtime=9.0, train_loss=2.0, epoch=1.0)  # the summary
    reporter.flush_points()
    written = points(run)
    assert set(written.values()) == {1}
    assert sorted(s for k, s in written if k == "epoch") == [0, 5, 10]
    assert sorted(s for k, s in written if k == "eval_loss") == [0, 5]


def test_a_resumed_attempt_keeps_its_checkpoints_steps_and_logs_from_the_next(run):
    metric_store.points_ingest(
        (run.pk, step, key, 1.0) for step in range(2, 13, 2) for key in ("loss", "epoch")
    )
    run.attempt = 2
    reporter, state = reporter_at(run, 8)  # killed at 12, resumed from checkpoint-8
    log(reporter, state, 8, eval_loss=3.0, epoch=0.8)  # the checkpoint's step: reported
    for step in (10, 12):
        log(reporter, state, step, **TRAINING_LOG, epoch=step / 10)
    reporter.flush_points()
    written = points(run)
    assert set(written.values()) == {1}
    for key in ("loss", "epoch"):
        assert sorted(s for k, s in written if k == key) == [2, 4, 6, 8, 10, 12], key
    assert not any(k == "eval_loss" for k, _ in written)
    attempts = dict(MetricPoint.objects.filter(run=run, key="loss").values_list("step", "attempt"))
    assert attempts == {2: 1, 4: 1, 6: 1, 8: 1, 10: 2, 12: 2}


def test_a_checkpoints_points_are_written_before_its_row(run, monkeypatch):
    """A process killed between the two leaves a checkpoint whose resumed attempt would not
    log its steps again: the points go first."""
    reporter, state = reporter_at(run, 0)
    reporter.last_flush = time.monotonic()  # the periodic flush is not due
    log(reporter, state, 5, **TRAINING_LOG, epoch=0.5)
    assert points(run) == Counter()

    def killed(**kwargs):
        raise SystemExit("killed")

    monkeypatch.setattr(Checkpoint.objects, "update_or_create", killed)
    args = SimpleNamespace(output_dir=str(artifact_path(run.folder) / "checkpoints"))
    with pytest.raises(SystemExit):
        reporter.on_save(args, state, None)
    assert points(run)[("loss", 5)] == 1


def test_only_a_first_attempt_evaluates_on_start(run):
    """The base model's eval loss is step 0's; a resumed attempt's checkpoint step was
    reported by the attempt before it."""
    fast = speed.effective({}, technique_is_sft=True)
    assert trainer.common_args(run, Path("unused"), True, fast)["eval_on_start"] is True
    folder = artifact_path(run.folder) / "checkpoints" / "checkpoint-5"
    folder.mkdir(parents=True)
    Checkpoint.objects.create(run=run, step=5, path=str(folder.relative_to(artifact_path(""))))
    assert trainer.common_args(run, Path("unused"), True, fast)["eval_on_start"] is False
    assert trainer.common_args(run, Path("unused"), False, fast)["eval_on_start"] is False
