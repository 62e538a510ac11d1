"""The trainer for a run, in the training process: the TRL trainer of its technique
(SFTTrainer: completion-only loss, packing; DPOTrainer; RewardTrainer and GRPOTrainer for
RLHF) with this project's safetensors checkpoints, its arguments (speed settings, FSDP,
early stopping, the checkpoint it resumes from) and its callbacks."""

import logging
from pathlib import Path

from experiments.models import Technique, TrainingRun
from experiments.training import data, guards, loading, speed
from experiments.training.checkpoint_state import SafetensorsCheckpointMixin
from experiments.training.reporting import RunReporter
from finetune_hub.errors import ServiceError
from finetune_hub.storage import artifact_path

log = logging.getLogger(__name__)


# Techniques trained with SFTTrainer (completion-only loss; packing can apply).
SFT = (
    Technique.FULL,
    Technique.LORA,
    Technique.QLORA,
    Technique.PREFIX,
    Technique.IA3,
    Technique.LOHA,
)


def speed_settings(run: TrainingRun) -> dict:
    experiment = run.experiment
    return speed.effective(experiment.hyperparameters, technique_is_sft=experiment.technique in SFT)


def early_stopping(run: TrainingRun, has_eval: bool) -> int:
    """The run's patience (0: off): guards.py decides from its settings and its data."""
    counts = run.experiment.dataset_version.counts if has_eval else {}
    return guards.early_stopping_patience(
        run.experiment.hyperparameters, counts, run.experiment.technique
    )


def fsdp_args(params: dict) -> dict:
    """FSDP2 (PyTorch's fully_shard, through accelerate) over the run's GPUs: every decoder
    layer (the model's _no_split_modules) sharded on its own, FSDP's activation checkpointing
    in place of the Trainer's (no second all-gather in the backward), and full state dicts:
    rank 0 gathers the weights and the optimizer state and writes them as safetensors
    (checkpoint_state.py), so a checkpoint resumes on any number of GPUs."""
    return dict(
        fsdp="full_shard auto_wrap",
        fsdp_config={
            "version": 2,
            "reshard_after_forward": True,
            "activation_checkpointing": params["gradient_checkpointing"],
            "state_dict_type": "FULL_STATE_DICT",
        },
    )


def latest_checkpoint(run: TrainingRun) -> str | None:
    checkpoint = run.checkpoints.order_by("-step").first()
    if checkpoint and artifact_path(checkpoint.path).exists():
        return str(artifact_path(checkpoint.path))
    return None


def common_args(run: TrainingRun, output_dir: Path, has_eval: bool, fast: dict) -> dict:
    params = run.experiment.hyperparameters
    on_cuda = loading.device() == "cuda"
    sharded = bool(params.get("fsdp"))
    checkpointing = params["gradient_checkpointing"] and not sharded  # FSDP checkpoints itself
    stopping = (
        # The best checkpoint by eval loss is loaded at the end and saved as the output
        # (saves fall on evaluations: hyperparameters.validate checks it).
        dict(
            load_best_model_at_end=True,
            metric_for_best_model="eval_loss",
            greater_is_better=False,
        )
        if early_stopping(run, has_eval)
        else {}
    )
    return (
        dict(
            output_dir=str(output_dir),
            learning_rate=params["learning_rate"],
            num_train_epochs=params["num_train_epochs"],
            max_steps=params["max_steps"],
            warmup_steps=params["warmup_ratio"],  # a float in [0, 1) is a ratio of the total steps
            lr_scheduler_type=params["lr_scheduler_type"],
            weight_decay=params["weight_decay"],
            per_device_train_batch_size=params["per_device_train_batch_size"],
            per_device_eval_batch_size=params["per_device_train_batch_size"],
            gradient_accumulation_steps=params["gradient_accumulation_steps"],
            gradient_checkpointing=checkpointing,
            # Reentrant checkpointing needs an input that requires grad and replays RNG twice; the
            # non-reentrant kind is what PyTorch recommends and what peft's adapters work with.
            gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
            optim=fast["optim"],
            use_liger_kernel=fast["liger_kernel"],
            seed=params["seed"],
            data_seed=params["seed"],
            logging_steps=params["logging_steps"],
            save_strategy="steps",
            save_steps=params["save_steps"],
            save_total_limit=3,
            eval_strategy="steps" if has_eval else "no",
            # The base model's eval loss, the point the curve improves on: on the first attempt
            # only (a resumed one would evaluate its checkpoint again, at a reported step).
            eval_on_start=has_eval and latest_checkpoint(run) is None,
            eval_steps=params["eval_steps"],
            # bf16 autocast over bf16 weights; under FSDP "no" mixed precision, as accelerate
            # would otherwise keep float32 master weights (and float32 AdamW moments): twice
            # the memory and checkpoint of the one-GPU run, which trains bf16 weights too.
            bf16=on_cuda and not sharded,
            use_cpu=not on_cuda,
            report_to=[],
            # Data parallel over several processes: every adapter or weight gets a gradient each
            # step, so DDP need not search the graph for unused parameters.
            ddp_find_unused_parameters=False if params.get("gpus", 1) > 1 else None,
            # Real tokens: pad tokens are not trained on and must not inflate tokens/s.
            include_num_input_tokens_seen="non_padding",
            disable_tqdm=False,
            dataloader_num_workers=0,
        )
        | stopping
        | (fsdp_args(params) if sharded else {})
    )


def _trainer(technique: str, params: dict, args: dict, fast: dict, shared: dict):
    """TRL's trainer for the technique, with the safetensors checkpoints of this project."""
    from trl import (
        DPOConfig,
        DPOTrainer,
        GRPOConfig,
        GRPOTrainer,
        RewardConfig,
        RewardTrainer,
        SFTConfig,
        SFTTrainer,
    )

    if technique == Technique.DPO:

        class Trainer(SafetensorsCheckpointMixin, DPOTrainer):
            pass

        return Trainer(
            args=DPOConfig(beta=params["beta"], max_length=params["max_length"], **args), **shared
        )
    if technique == Technique.REWARD:

        class Trainer(SafetensorsCheckpointMixin, RewardTrainer):
            pass

        return Trainer(args=RewardConfig(max_length=params["max_length"], **args), **shared)
    if technique == Technique.GRPO:

        class Trainer(SafetensorsCheckpointMixin, GRPOTrainer):
            pass

        config = GRPOConfig(
            num_generations=params["num_generations"],
            max_completion_length=params["max_completion_length"],
            temperature=params["temperature"],
            beta=params["kl_coef"],
            **args,
        )
        return Trainer(args=config, **shared)

    class Trainer(SafetensorsCheckpointMixin, SFTTrainer):
        pass

    # Packing (best-fit decreasing, padding-free rows) only on CUDA: the varlen attention
    # keeps examples apart without a quadratic mask (see speed.py).
    config = SFTConfig(
        max_length=params["max_length"],
        packing=fast["packing"],
        completion_only_loss=True,
        **args,
    )
    return Trainer(args=config, **shared)


def build_trainer(run: TrainingRun, output_dir: Path, reporter: RunReporter):
    experiment, params = run.experiment, run.experiment.hyperparameters
    train, evaluation = data.build_datasets(run)
    fast = speed_settings(run)  # decided once: the log line, load and arguments agree
    log.info("Speed settings: %s", fast)
    model, tokenizer = loading.load_model(run, fast)
    if experiment.technique == Technique.GRPO:
        train = data.prompts_that_fit(train, tokenizer, params)
        evaluation = data.prompts_that_fit(evaluation, tokenizer, params) or None
        if not len(train):
            raise ServiceError(
                f"No training prompt fits in max_length {params['max_length']} with room for "
                f"{params['max_completion_length']} completion tokens",
                status=422,
            )
    args = common_args(run, output_dir, evaluation is not None, fast)
    callbacks = [reporter]
    if patience := early_stopping(run, evaluation is not None):
        from transformers import EarlyStoppingCallback

        callbacks.append(
            EarlyStoppingCallback(
                early_stopping_patience=patience,
                early_stopping_threshold=params["early_stopping_min_delta"],
            )
        )
    shared = dict(
        model=model,
        processing_class=tokenizer,
        train_dataset=train,
        eval_dataset=evaluation,
        callbacks=callbacks,
        peft_config=loading.peft_config(experiment.technique, params),
    )
    if experiment.technique == Technique.GRPO:
        scorer, scorer_tokenizer = loading.reward_model(run, fast)
        shared |= {"reward_funcs": scorer, "reward_processing_classes": scorer_tokenizer}
    trainer = _trainer(experiment.technique, params, args, fast, shared)
    if fast["bf16_adapter_inputs"]:
        speed.keep_adapter_inputs_in_compute_dtype(trainer.model)
    return trainer
