"""What a run trains, in the training process: its base model and tokenizer (the 4-bit NF4
base for QLoRA, a score head for a reward model), the peft config of its adapters, and GRPO's
frozen reward model. transformers loads, peft adapts, bitsandbytes quantises; this module
only chooses their settings."""

import logging
import os

import torch

from experiments.models import Technique, TrainingRun
from experiments.training import hyperparameters as hp
from experiments.training import speed
from finetune_hub.errors import ServiceError
from finetune_hub.model_files import is_adapter, tokenizer_source
from finetune_hub.storage import artifact_path, assert_no_pickles
from inference import base_models

log = logging.getLogger(__name__)


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


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
    if is_adapter(folder):
        from peft import PeftModel

        model = AutoModelForSequenceClassification.from_pretrained(base, **kwargs)
        model = PeftModel.from_pretrained(model, folder).merge_and_unload()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder, **kwargs)
    tokenizer = with_pad_token(AutoTokenizer.from_pretrained(tokenizer_source(folder, base)))
    model.config.pad_token_id = tokenizer.pad_token_id
    log.info("Reward model: run %s (%s)", reward.pk, reward.experiment.name)
    return model.eval().requires_grad_(False), tokenizer
