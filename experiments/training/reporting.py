"""What the training process tells the database: heartbeat, progress and ETA, batched
metric points, checkpoints and the tail of its log. Writes are batched (every few seconds)
so a fast CPU run does not turn into a stream of tiny transactions."""

import math
import os
import re
import threading
import time
from pathlib import Path

import torch
from django.utils import timezone
from transformers import TrainerCallback

from experiments import metric_store
from experiments.models import Checkpoint, MetricPoint, TrainingRun
from experiments.training import speed, system
from experiments.training.lifeline import supervisor_alive_check
from finetune_hub.storage import artifact_path

FLUSH_EVERY_S = 2.0
# Set by the training process's SIGTERM handler (a cancel): the trainer stops after the step
# it is in, and what was logged is written before the process ends.
STOP = threading.Event()
ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
LOG_TAIL_LINES = 200
KEYS = {
    "loss": "loss",
    "learning_rate": "learning_rate",
    "grad_norm": "grad_norm",
    "eval_loss": "eval_loss",
    "epoch": "epoch",
    # DPO
    "rewards/accuracies": "reward_accuracy",
    "rewards/margins": "reward_margin",
    "eval_rewards/accuracies": "eval_reward_accuracy",
    # Reward model (RewardTrainer): how often the chosen answer outscores the rejected one, on
    # the training batches and on the held-out pairs, and by how much
    "accuracy": "pairwise_accuracy",
    "eval_accuracy": "eval_pairwise_accuracy",
    "margin": "reward_margin",
    "eval_margin": "eval_reward_margin",
    # GRPO (GRPOTrainer): the reward model's mean score of the sampled completions, its spread,
    # the KL divergence from the base model, and the completions' mean length
    "reward": "reward",
    "reward_std": "reward_std",
    "kl": "kl",
    "completions/mean_length": "completion_length",
    "eval_reward": "eval_reward",
}


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.exists():
        return ""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - 64 * 1024))
        text = fh.read().decode("utf-8", "replace")
    # Progress bars redraw with \r: keep only the last state of each line, without the
    # terminal's escape sequences (colours, cursor moves) that tqdm and loggers write.
    # (split on \n only: str.splitlines would split at each \r, one line per redraw.)
    rows = text.replace("\r\n", "\n").rstrip("\n").split("\n")
    cleaned = [ANSI.sub("", line.rsplit("\r", 1)[-1]) for line in rows]
    return "\n".join(cleaned[-lines:])


def rank() -> int:
    """This process's rank in a run trained by several (torchrun sets RANK), else 0."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def stop_everywhere() -> bool:
    """Whether training stops after this step, agreed by every rank: a cancel's SIGTERM
    reaches the ranks at different moments, and a rank that stopped alone would leave the
    others waiting for it in the next gradient all-reduce."""
    stop = STOP.is_set()
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        flag = torch.tensor([1 if stop else 0], dtype=torch.int32, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        stop = bool(flag.item())
        if stop:
            STOP.set()  # a rank the signal has not reached yet stops as a cancelled one too
    return stop


class RunReporter(TrainerCallback):
    """Rank 0 reports (one writer for the run's rows); every rank checks its supervisor and
    stops with the others."""

    def __init__(self, run: TrainingRun, log_path: Path):
        self.main = rank() == 0
        self.run = run
        self.log_path = log_path
        self.points: list[tuple[int, int, str, float, int]] = []
        # One point a (key, step): the last step each key was reported at, and the step up
        # to which the attempt before this one reported (-1: none did).
        self.reported: dict[str, int] = {}
        self.reported_before = -1
        self.last_flush = 0.0
        self.started = time.monotonic()
        self.first_step: int | None = None
        self.tokens = (time.monotonic(), 0)
        self.supervisor_alive = supervisor_alive_check()
        self.n_params, self.gpu = 0, None
        self.system, self.last_system = system.Sampler(), 0.0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not self.main:
            return
        if torch.cuda.is_available() and model is not None:
            # parameters() yields a tied weight once; numel() of an FSDP-sharded parameter
            # (a DTensor) is the whole tensor's.
            self.n_params = sum(p.numel() for p in model.parameters())
            self.gpu = torch.cuda.get_device_name()
        # A resumed attempt re-runs the steps after its checkpoint: drop their old points,
        # and keep those up to the checkpoint's step as the earlier attempt reported them.
        if MetricPoint.objects.filter(run=self.run, step__gt=state.global_step).delete()[0]:
            metric_store.series_rebuild(self.run.pk)
        if state.global_step:
            self.reported_before = state.global_step
        TrainingRun.objects.filter(pk=self.run.pk).update(
            total_steps=state.max_steps, step=state.global_step
        )

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self.main:
            return
        for key, name in KEYS.items():
            value = (logs or {}).get(key)
            if isinstance(value, int | float) and math.isfinite(value):
                self._point(state.global_step, name, float(value))
        if "loss" in (logs or {}):
            self._tokens_per_second(state)
        self._maybe_flush(state)

    def _tokens_per_second(self, state) -> None:
        seen = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        then, before = self.tokens
        now = time.monotonic()
        if seen > before and now > then:
            rate = (seen - before) / (now - then)  # real tokens: pads are not counted
            self._point(state.global_step, "tokens_per_second", rate)
            if self.gpu:
                # the rate counts every rank's tokens (Trainer gathers them): over all GPUs
                mfu = speed.mfu(self.n_params, rate, self.gpu, gpus=world_size())
                if mfu is not None:
                    self._point(state.global_step, "mfu", mfu)
                peak = torch.cuda.max_memory_allocated() / 2**30
                self._point(state.global_step, "peak_memory_gib", peak)
        self.tokens = (now, seen)

    def _point(self, step: int, key: str, value: float) -> None:
        # The trainer puts the epoch in every log of a step (the training log, an evaluation,
        # the end-of-training summary): the first is the point, the others say the same.
        if step <= self.reported.get(key, self.reported_before):
            return
        self.reported[key] = step
        self.points.append((self.run.pk, step, key, value, int(time.time() * 1000)))

    def on_step_end(self, args, state, control, **kwargs):
        if not self.supervisor_alive():
            # The supervising worker died; stop rather than train unsupervised.
            os._exit(70)
        if stop_everywhere():
            control.should_training_stop = True
        if not self.main:
            return
        if self.first_step is None:
            # The clock starts after the first step: it carries the warm-up (allocation,
            # kernel selection, the first batches' loading), which would skew the ETA.
            self.first_step, self.started = state.global_step, time.monotonic()
        self._maybe_flush(state)

    def on_save(self, args, state, control, **kwargs):
        if not self.main:
            return
        # The points up to this step are written before the checkpoint's row: an attempt
        # resumed from it keeps them, and would not log them again.
        self._flush(state)
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        relative = folder.resolve().relative_to(artifact_path(""))
        Checkpoint.objects.update_or_create(
            run=self.run, step=state.global_step, defaults={"path": str(relative)}
        )
        # Checkpoints the trainer rotated away are gone from disk: drop their rows.
        for checkpoint in Checkpoint.objects.filter(run=self.run):
            if not artifact_path(checkpoint.path).exists():
                checkpoint.delete()

    def on_train_end(self, args, state, control, **kwargs):
        if self.main:
            self._flush(state)

    def _maybe_flush(self, state) -> None:
        if time.monotonic() - self.last_system >= system.EVERY_S:
            self.last_system = time.monotonic()
            for key, value in self.system.sample().items():
                self._point(state.global_step, key, value)
        if time.monotonic() - self.last_flush >= FLUSH_EVERY_S:
            self._flush(state)

    def _eta(self, state) -> float | None:
        done = state.global_step - (self.first_step or 0)
        if done <= 0:
            return None
        per_step = (time.monotonic() - self.started) / done
        return per_step * max(0, state.max_steps - state.global_step)

    def flush_points(self) -> None:
        if self.main and self.points:
            metric_store.points_ingest(self.points, attempt=self.run.attempt)
            self.points = []

    def _flush(self, state) -> None:
        metric_store.points_ingest(self.points, attempt=self.run.attempt)
        self.points = []
        self.last_flush = time.monotonic()
        TrainingRun.objects.filter(pk=self.run.pk).update(
            step=state.global_step,
            total_steps=state.max_steps,
            eta_seconds=self._eta(state),
            heartbeat_at=timezone.now(),
            log_tail=log_tail(self.log_path),
        )
