"""The experiment form's hyperparameter fields: the dashboard posts text, the service wants
typed values. Blank fields keep the technique's defaults."""

from experiments.models import Technique
from finetune_hub.errors import FieldError, ServiceError


def _bool(value: str) -> bool:
    return value.lower() in ("1", "true", "on", "yes")


def _switch(value: str) -> bool | None:
    """auto (blank) / on / off: auto leaves the choice to the worker (speed.py)."""
    choice = value.strip().lower()
    if choice not in ("on", "off"):
        raise ValueError(choice)
    return choice == "on"


def _modules(value: str):
    value = value.strip()
    return value if value == "all-linear" else [m.strip() for m in value.split(",") if m.strip()]


def _module_list(value: str) -> list[str]:
    """Comma-separated module names; "none" is the empty list."""
    return [] if value.strip().lower() == "none" else _modules(value)


# (name, label, parser, group): the groups show and hide with the technique.
FIELDS = [
    ("learning_rate", "Learning rate (blank: the technique's default)", float, "all"),
    ("num_train_epochs", "Epochs", float, "all"),
    ("max_steps", "Max steps (-1: by epochs)", int, "all"),
    ("per_device_train_batch_size", "Batch size", int, "all"),
    ("gradient_accumulation_steps", "Gradient accumulation", int, "all"),
    ("max_length", "Max length (tokens)", int, "all"),
    ("warmup_ratio", "Warmup ratio", float, "all"),
    ("lr_scheduler_type", "Scheduler", str, "all"),
    ("eval_steps", "Evaluate every N steps", int, "all"),
    ("save_steps", "Checkpoint every N steps", int, "all"),
    ("seed", "Seed", int, "all"),
    ("gradient_checkpointing", "Gradient checkpointing", _bool, "all"),
    ("gpus", "GPUs for one run, data parallel (CPU worker: processes)", int, "all"),
    ("fsdp", "FSDP: shard weights, gradients and optimizer across the GPUs", _bool, "fsdp"),
    (
        "early_stopping_patience",
        "Early stopping patience (blank: on under 1,000 examples)",
        int,
        "all",
    ),
    ("early_stopping_min_delta", "Early stopping: smallest eval loss improvement", float, "all"),
    ("packing", "Packing, padding-free (auto: on CUDA workers)", _switch, "sft"),
    ("attention", "Attention (auto: varlen FlashAttention when packing)", str, "all"),
    ("liger_kernel", "Liger kernels (auto: on CUDA workers with liger-kernel)", _switch, "all"),
    ("fused_adamw", "Fused AdamW (auto: on CUDA workers)", _switch, "all"),
    (
        "bf16_adapter_inputs",
        "LoRA / LoHa inputs in bf16, no float32 copy (auto: CUDA)",
        _switch,
        "rank",
    ),
    ("qlora_bf16_norms", "QLoRA: norms and embeddings stay bf16 (auto: CUDA)", _switch, "qlora"),
    ("lora_r", "LoRA / LoHa r", int, "rank"),
    ("lora_alpha", "LoRA / LoHa alpha", int, "rank"),
    ("lora_dropout", "LoRA dropout", float, "lora"),
    ("lora_target_modules", "Target modules (comma-separated or all-linear)", _modules, "rank"),
    ("use_dora", "DoRA", _bool, "lora"),
    ("ia3_target_modules", "IA3 target modules (comma-separated)", _module_list, "ia3"),
    (
        "ia3_feedforward_modules",
        "IA3 feed-forward modules, input rescaled (blank: down_proj if targeted; none)",
        _module_list,
        "ia3",
    ),
    ("num_virtual_tokens", "Virtual tokens", int, "prefix"),
    ("beta", "DPO beta", float, "dpo"),
    ("dpo_base", "DPO trains (lora or full)", str, "dpo"),
    ("rl_base", "Reward model / GRPO trains (lora or full)", str, "rl"),
    ("reward_run", "Reward model (a finished reward-model run)", int, "grpo"),
    ("num_generations", "Completions sampled per prompt", int, "grpo"),
    ("max_completion_length", "Max completion length (tokens)", int, "grpo"),
    ("temperature", "Sampling temperature", float, "grpo"),
    ("kl_coef", "KL coefficient towards the base model (0: no reference)", float, "grpo"),
]
# Fields chosen from a list the view supplies (value, label), not typed.
CHOICES = {"reward_run"}
CHECKBOXES = {name for name, _, parser, _ in FIELDS if parser is _bool}
SWITCHES = {name for name, _, parser, _ in FIELDS if parser is _switch}
# The field groups each technique uses: the form shows these and hides the rest.
TECHNIQUE_GROUPS = {
    Technique.FULL: ["all", "sft", "fsdp"],
    Technique.LORA: ["all", "sft", "rank", "lora"],
    Technique.QLORA: ["all", "sft", "rank", "lora", "qlora"],
    Technique.PREFIX: ["all", "sft", "prefix"],
    Technique.IA3: ["all", "sft", "ia3"],
    Technique.LOHA: ["all", "sft", "rank"],
    Technique.DPO: ["all", "rank", "lora", "dpo"],
    Technique.REWARD: ["all", "rank", "lora", "rl"],
    Technique.GRPO: ["all", "rank", "lora", "rl", "grpo"],
}


def hyperparameters_from(post) -> dict:
    params, errors = {}, []
    for name, label, parser, _ in FIELDS:
        raw = post.get(f"hp_{name}", "")
        if name in CHECKBOXES:
            if raw:
                params[name] = True
            continue
        if not raw.strip() or (name in SWITCHES and raw.strip().lower() == "auto"):
            continue
        try:
            params[name] = parser(raw.strip())
        except ValueError:
            wanted = "auto, on or off" if name in SWITCHES else "a number"
            errors.append(
                FieldError(field=f"hyperparameters.{name}", message=f"{label}: not {wanted}")
            )
    if errors:
        raise ServiceError("Invalid hyperparameters", status=422, errors=errors)
    return params


def form_fields(
    post, errors: dict[str, list[str]], choices: dict[str, list[tuple]] | None = None
) -> list[dict]:
    """The hyperparameter fields to draw: kind, the value posted, the default, the errors,
    and for a choice field its options ((value, label) pairs from `choices`)."""
    from experiments.training.hyperparameters import Hyperparameters

    defaults = Hyperparameters().model_dump()
    out = []
    for name, label, _parser, group in FIELDS:
        default = defaults.get(name)
        if isinstance(default, list):
            default = ",".join(default)
        elif default is None:
            default = "auto" if name in SWITCHES else "the technique's"
        kind = "checkbox" if name in CHECKBOXES else "switch" if name in SWITCHES else "text"
        kind = "choice" if name in CHOICES else kind
        out.append(
            {
                "name": name,
                "label": label,
                "group": group,
                "kind": kind,
                "value": post.get(f"hp_{name}", ""),
                "default": default,
                "errors": errors.get(f"hyperparameters.{name}", []),
                "options": [(str(v), label) for v, label in (choices or {}).get(name, [])],
            }
        )
    return out
