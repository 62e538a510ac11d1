"""Builds the model, data and trainer for a run and trains it, in the training process.
TRL does the work (SFTTrainer: completion-only loss, packing; DPOTrainer; RewardTrainer and
GRPOTrainer for RLHF); peft the adapters; bitsandbytes the 4-bit base for QLoRA. This module
only chooses and wires them."""

import logging
from pathlib import Path

import torch

from datasets_app import formats
from datasets_app.models import DataFormat
from experiments.models import Technique, TrainingRun
from experiments.training import guards, reporting, speed
from experiments.training import hyperparameters as hp
from experiments.training.checkpoint_state import SafetensorsCheckpointMixin
from finetune_hub.storage import assert_no_pickles
from experiments.training.reporting import RunReporter
from finetune_hub.errors import ServiceError
from finetune_hub.storage import artifact_path, files_sha256
from inference import base_models

log = logging.getLogger(__name__)


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def local_rank() -> int:
    import os

    return int(os.environ.get("LOCAL_RANK", "0"))


def sft_record(fmt: str, fields: dict) -> dict:
    """Prompt-completion records, so SFTTrainer computes the loss on the completion only."""
    if fmt == DataFormat.COMPLETION:
        return {"prompt": fields["prompt"], "completion": fields["completion"]}
    messages = formats.to_messages(fmt, fields)
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def dpo_record(fields: dict) -> dict:
    return {
        "prompt": [{"role": "user", "content": fields["prompt"]}],
        "chosen": [{"role": "assistant", "content": fields["chosen"]}],
        "rejected": [{"role": "assistant", "content": fields["rejected"]}],
    }


def prompt_record(fmt: str, fields: dict) -> dict:
    """The prompt alone, for GRPO to sample completions of (a chat prompt as messages)."""
    if fmt == DataFormat.COMPLETION:
        return {"prompt": fields["prompt"]}
    if fmt == DataFormat.PREFERENCE:
        return {"prompt": [{"role": "user", "content": fields["prompt"]}]}
    return {"prompt": formats.to_messages(fmt, fields)[:-1]}


# Techniques that learn from a prompt with a chosen and a rejected answer.
PAIRED = (Technique.DPO, Technique.REWARD)


def build_datasets(run: TrainingRun):
    from datasets import Dataset

    version, technique = run.experiment.dataset_version, run.experiment.technique
    if technique in PAIRED:
        convert = dpo_record
    elif technique == Technique.GRPO:
        convert = lambda f: prompt_record(version.format, f)  # noqa: E731
    else:
        convert = lambda f: sft_record(version.format, f)  # noqa: E731
    rows = {"train": [], "eval": []}
    for example in version.examples.filter(split__in=rows).order_by("position"):
        rows[example.split].append(convert(example.fields))
    return Dataset.from_list(rows["train"]), (
        Dataset.from_list(rows["eval"]) if rows["eval"] else None
    )


def cuda_require(what: str) -> None:
    if device() != "cuda":
        raise ServiceError(f"{what} needs a CUDA GPU; this worker has CPU only", status=409)


def quantized_load(params: dict) -> dict:
    """from_pretrained's arguments for QLoRA's 4-bit NF4 base, on the worker's GPU."""
    cuda_require("QLoRA")
    from transformers import BitsAndBytesConfig

    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=params["bnb_4bit_use_double_quant"],
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    # Each rank of a run on several GPUs loads onto its own (torchrun's LOCAL_RANK).
    return {"quantization_config": config, "device_map": {"": local_rank()}}


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


def model_kwargs(fast: dict) -> dict:
    return {
        "dtype": torch.bfloat16 if device() == "cuda" else torch.float32,
        "attn_implementation": fast["attention"],
    }


def with_pad_token(tokenizer):
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(run: TrainingRun, fast: dict):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    experiment, params = run.experiment, run.experiment.hyperparameters
    path = base_models.resolve(experiment.base_model)
    if fast["attention"] == speed.VARLEN:
        speed.register_varlen_attention()
    kwargs = model_kwargs(fast)
    if params.get("fsdp"):
        cuda_require("FSDP")  # before the weights load: a CPU worker refuses at once
    if experiment.technique == Technique.QLORA:
        kwargs.update(quantized_load(params))
    tokenizer = with_pad_token(AutoTokenizer.from_pretrained(path))
    # Weights the base has not got (a reward model's score head) are drawn here, before the
    # Trainer seeds: from the run's seed, so a run and its resumed attempt, or two runs of one
    # experiment, start from the same weights.
    from transformers import set_seed

    set_seed(params["seed"])
    if experiment.technique == Technique.REWARD:
        # A reward model: the base with a one-output score head (TRL's RewardTrainer), which
        # reads the last non-pad token of each sequence.
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, use_safetensors=True, **kwargs
        )
        model.config.pad_token_id = tokenizer.pad_token_id
        return model, tokenizer
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, **kwargs)
    if experiment.technique == Technique.QLORA and not fast["qlora_bf16_norms"]:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=params["gradient_checkpointing"]
        )
    return model, tokenizer


def peft_config(technique: str, params: dict):
    from peft import IA3Config, LoHaConfig, LoraConfig, PrefixTuningConfig

    if technique in (Technique.LORA, Technique.QLORA) or (
        technique in hp.BASE_FIELD and hp.trains(technique, params) == "lora"
    ):
        return LoraConfig(
            r=params["lora_r"],
            lora_alpha=params["lora_alpha"],
            lora_dropout=params["lora_dropout"],
            target_modules=params["lora_target_modules"],
            use_dora=params["use_dora"],
            # A reward model's score head is new: peft trains and saves it beside the adapters
            # (modules_to_save) for the sequence-classification task.
            task_type="SEQ_CLS" if technique == Technique.REWARD else "CAUSAL_LM",
        )
    if technique == Technique.IA3:
        return IA3Config(
            target_modules=params["ia3_target_modules"],
            feedforward_modules=params["ia3_feedforward_modules"],
            task_type="CAUSAL_LM",
        )
    if technique == Technique.LOHA:
        return LoHaConfig(
            r=params["lora_r"],
            alpha=params["lora_alpha"],
            target_modules=params["lora_target_modules"],
            task_type="CAUSAL_LM",
        )
    if technique == Technique.PREFIX:
        return PrefixTuningConfig(
            num_virtual_tokens=params["num_virtual_tokens"], task_type="CAUSAL_LM"
        )
    return None


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


def common_args(run: TrainingRun, output_dir: Path, has_eval: bool, fast: dict) -> dict:
    params = run.experiment.hyperparameters
    on_cuda = device() == "cuda"
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


def reward_model(run: TrainingRun, fast: dict):
    """GRPO's reward model: the reward-model run the experiment names (of the same team),
    its adapters merged into its base, or its full weights; frozen, in evaluation mode."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from experiments.selectors import reward_run_of

    experiment = run.experiment
    reward = reward_run_of(experiment, trained=True)
    folder = artifact_path(reward.output_path) if reward else None
    if folder is None or not folder.is_dir():
        raise ServiceError(
            f"The reward model (run {experiment.hyperparameters['reward_run']}) is gone: its "
            "output was deleted; train a reward model again and make a new experiment",
            status=409,
        )
    assert_no_pickles(folder)
    base = base_models.resolve(reward.model_base)
    kwargs = model_kwargs(fast) | {"num_labels": 1, "use_safetensors": True}
    if (folder / "adapter_config.json").exists():
        from peft import PeftModel

        model = AutoModelForSequenceClassification.from_pretrained(base, **kwargs)
        model = PeftModel.from_pretrained(model, folder).merge_and_unload()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder, **kwargs)
    tokenizer = with_pad_token(
        AutoTokenizer.from_pretrained(
            folder if (folder / "tokenizer_config.json").exists() else base
        )
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    log.info("Reward model: run %s (%s)", reward.pk, reward.experiment.name)
    return model.eval().requires_grad_(False), tokenizer


def prompts_that_fit(dataset, tokenizer, params: dict):
    """GRPO's prompts with room for a completion: max_length bounds a prompt and its
    completion together, so longer prompts are left out (as DPO and the reward model leave
    out pairs over max_length)."""
    if dataset is None:
        return None
    room = params["max_length"] - params["max_completion_length"]

    def fits(row) -> bool:
        prompt = row["prompt"]
        if isinstance(prompt, str):
            return len(tokenizer(prompt)["input_ids"]) <= room
        encoded = tokenizer.apply_chat_template(
            prompt, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return len(encoded["input_ids"]) <= room

    kept = dataset.filter(fits)
    if len(kept) < len(dataset):
        log.info(
            "%d of %d prompts are over %d tokens (max_length %d less max_completion_length %d) "
            "and are left out",
            len(dataset) - len(kept),
            len(dataset),
            room,
            params["max_length"],
            params["max_completion_length"],
        )
    return kept


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
    train, evaluation = build_datasets(run)
    fast = speed_settings(run)  # decided once: the log line, load and arguments agree
    log.info("Speed settings: %s", fast)
    model, tokenizer = load_model(run, fast)
    if experiment.technique == Technique.GRPO:
        train = prompts_that_fit(train, tokenizer, params)
        evaluation = prompts_that_fit(evaluation, tokenizer, params) or None
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
        peft_config=peft_config(experiment.technique, params),
    )
    if experiment.technique == Technique.GRPO:
        scorer, scorer_tokenizer = reward_model(run, fast)
        shared |= {"reward_funcs": scorer, "reward_processing_classes": scorer_tokenizer}
    trainer = _trainer(experiment.technique, params, args, fast, shared)
    if fast["bf16_adapter_inputs"]:
        speed.keep_adapter_inputs_in_compute_dtype(trainer.model)
    return trainer


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


def latest_checkpoint(run: TrainingRun) -> str | None:
    checkpoint = run.checkpoints.order_by("-step").first()
    if checkpoint and artifact_path(checkpoint.path).exists():
        return str(artifact_path(checkpoint.path))
    return None


def loaded_model_info(run: TrainingRun, model) -> dict:
    """What was loaded: path, file hash (embedded) or hub revision, dtype and device."""
    info = base_models.describe(run.experiment.base_model)
    info["dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
    info["device"] = device()
    if revision := getattr(model.config, "_commit_hash", None):
        info["revision"] = revision
    return info


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


def leave_process_group() -> None:
    """Of several processes, each waits here until rank 0 has written the output, then the
    process group is torn down in order. Under FSDP on two H200s a rank that exited while
    rank 0 still wrote died in a segmentation fault at exit, which failed the attempt."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
