"""Trains a run in the training process and writes what it made: the trainer
(trainer.py) over the model (loading.py) and data (data.py), resumed from the last
checkpoint; then the final output, its file hashes and why training stopped."""

import logging
from pathlib import Path

import torch

from experiments.models import TrainingRun
from experiments.training import reporting
from experiments.training.loading import device
from experiments.training.reporting import RunReporter
from experiments.training.trainer import build_trainer, early_stopping, latest_checkpoint
from finetune_hub.storage import artifact_path, assert_no_pickles, files_sha256
from inference import base_models

log = logging.getLogger(__name__)


def train(run: TrainingRun, log_path: Path) -> None:
    folder = artifact_path(run.folder)
    reporter = RunReporter(run, log_path)
    trainer = build_trainer(run, folder / "checkpoints", reporter)
    resume = latest_checkpoint(run)
    if resume:
        assert_no_pickles(resume)
        log.info("Resuming from %s", resume)
    main = reporting.rank() == 0  # of several processes, rank 0 writes the run's rows
    if trainer.args.world_size > 1 and main:
        import torch.distributed as dist

        log.info(
            "%s over %d processes (%s); global batch %d",
            "FSDP full shard" if trainer.is_fsdp_enabled else "Data parallel",
            trainer.args.world_size,
            dist.get_backend() if dist.is_initialized() else "not initialised",
            trainer.args.world_size
            * trainer.args.per_device_train_batch_size
            * trainer.args.gradient_accumulation_steps,
        )
    if main:
        TrainingRun.objects.filter(pk=run.pk).update(
            base_model_info=loaded_model_info(run, trainer.model)
        )
    try:
        trainer.train(resume_from_checkpoint=resume)
    finally:
        reporter.flush_points()  # a cancel or a crash keeps what was logged before it
    if reporting.STOP.is_set():
        # cancelled (every rank agrees): no final output; the checkpoints are kept
        leave_process_group()
        return
    final = folder / "final"
    trainer.save_model(str(final))  # rank 0 writes it
    if main:
        assert_no_pickles(final)
        peak = torch.cuda.max_memory_allocated() if device() == "cuda" else None
        TrainingRun.objects.filter(pk=run.pk).update(
            stop_reason=stop_reason(run, trainer.state, trainer.args),
            output_path=str(final.relative_to(artifact_path(""))),
            output_files=files_sha256(final),
            peak_memory_bytes=peak,
            step=trainer.state.global_step,
        )
    leave_process_group()


def stop_reason(run: TrainingRun, state, args) -> str:
    """Why training ended before its last step (early stopping), and which checkpoint the
    output is when the best one was kept; empty when it ran to the end with nothing to say."""
    params = run.experiment.hyperparameters
    parts = []
    if state.global_step < state.max_steps:
        patience = early_stopping(run, True)
        parts.append(
            f"Stopped early at step {state.global_step} of {state.max_steps}: eval loss did "
            f"not improve by more than {params['early_stopping_min_delta']:g} in {patience} "
            "evaluations."
        )
    if args.load_best_model_at_end and state.best_model_checkpoint:
        best = Path(state.best_model_checkpoint).name.removeprefix("checkpoint-")
        parts.append(
            f"The output is the best checkpoint, step {best} (eval loss {state.best_metric:.4g})."
        )
    return " ".join(parts)


def loaded_model_info(run: TrainingRun, model) -> dict:
    """What was loaded: path, file hash (embedded) or hub revision, dtype and device."""
    info = base_models.describe(run.experiment.base_model)
    info["dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
    info["device"] = device()
    if revision := getattr(model.config, "_commit_hash", None):
        info["revision"] = revision
    return info


def leave_process_group() -> None:
    """Of several processes, each waits here until rank 0 has written the output, then the
    process group is torn down in order. Under FSDP on two H200s a rank that exited while
    rank 0 still wrote died in a segmentation fault at exit, which failed the attempt."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
