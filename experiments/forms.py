"""The experiment form's hyperparameter fields, read from the Hyperparameters model: each
field's type, bounds, default, choices and description come from there, so a hyperparameter
added to the model is a field of the form. The page adds what the model does not say: a
label, and the group that shows and hides the field with the technique. The dashboard posts
text; the service wants typed values. Blank fields keep the technique's defaults."""

from dataclasses import dataclass
from types import NoneType, UnionType
from typing import Literal, Union, get_args, get_origin

import annotated_types

from experiments.models import Technique
from experiments.training.hyperparameters import Hyperparameters
from finetune_hub.errors import FieldError, ServiceError

# name: (label, group). A hyperparameter missing here is still drawn, named after itself, in
# the group every technique shows.
LAYOUT = {
    "learning_rate": ("Learning rate (blank: the technique's default)", "all"),
    "num_train_epochs": ("Epochs", "all"),
    "max_steps": ("Max steps (-1: by epochs)", "all"),
    "warmup_ratio": ("Warmup ratio", "all"),
    "lr_scheduler_type": ("Scheduler", "all"),
    "weight_decay": ("Weight decay", "all"),
    "per_device_train_batch_size": ("Batch size", "all"),
    "gradient_accumulation_steps": ("Gradient accumulation", "all"),
    "max_length": ("Max length (tokens)", "all"),
    "seed": ("Seed", "all"),
    "eval_steps": ("Evaluate every N steps", "all"),
    "save_steps": ("Checkpoint every N steps", "all"),
    "logging_steps": ("Log every N steps", "all"),
    "gradient_checkpointing": ("Gradient checkpointing", "all"),
    "gpus": ("GPUs for one run, data parallel (CPU worker: processes)", "all"),
    "fsdp": ("FSDP: shard weights, gradients and optimizer across the GPUs", "fsdp"),
    "early_stopping_patience": (
        "Early stopping patience (blank: on under 1,000 examples)",
        "all",
    ),
    "early_stopping_min_delta": ("Early stopping: smallest eval loss improvement", "all"),
    "packing": ("Packing, padding-free (auto: on CUDA workers)", "sft"),
    "attention": ("Attention (auto: varlen FlashAttention when packing)", "all"),
    "liger_kernel": ("Liger kernels (auto: on CUDA workers with liger-kernel)", "all"),
    "fused_adamw": ("Fused AdamW (auto: on CUDA workers)", "all"),
    "bf16_adapter_inputs": ("LoRA / LoHa inputs in bf16, no float32 copy (auto: CUDA)", "rank"),
    "qlora_bf16_norms": ("QLoRA: norms and embeddings stay bf16 (auto: CUDA)", "qlora"),
    "lora_r": ("LoRA / LoHa r", "rank"),
    "lora_alpha": ("LoRA / LoHa alpha", "rank"),
    "lora_dropout": ("LoRA dropout", "lora"),
    "lora_target_modules": ("Target modules (comma-separated or all-linear)", "rank"),
    "use_dora": ("DoRA", "lora"),
    "ia3_target_modules": ("IA3 target modules (comma-separated)", "ia3"),
    "ia3_feedforward_modules": (
        "IA3 feed-forward modules, input rescaled (blank: down_proj if targeted; none)",
        "ia3",
    ),
    "bnb_4bit_use_double_quant": ("QLoRA double quantization (auto: on)", "qlora"),
    "num_virtual_tokens": ("Virtual tokens", "prefix"),
    "beta": ("DPO beta", "dpo"),
    "dpo_base": ("DPO trains (lora or full)", "dpo"),
    "rl_base": ("Reward model / GRPO trains (lora or full)", "rl"),
    "reward_run": ("Reward model (a finished reward-model run)", "grpo"),
    "num_generations": ("Completions sampled per prompt", "grpo"),
    "max_completion_length": ("Max completion length (tokens)", "grpo"),
    "temperature": ("Sampling temperature", "grpo"),
    "kl_coef": ("KL coefficient towards the base model (0: no reference)", "grpo"),
}
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


def _arms(annotation) -> list:
    """The types of a union (int | None -> [int, NoneType]); a plain type alone."""
    if get_origin(annotation) in (Union, UnionType):
        return list(get_args(annotation))
    return [annotation]


@dataclass(frozen=True)
class Spec:
    """One hyperparameter as the form sees it."""

    name: str
    label: str
    group: str
    kind: str  # checkbox, switch, literal, list, int, float
    default: object
    choices: tuple = ()  # a Literal's values (of a list field: the words it takes whole)
    minimum: float | None = None
    maximum: float | None = None
    exclusive: tuple[bool, bool] = (False, False)  # gt / lt rather than ge / le
    description: str = ""

    def parse(self, raw: str):
        if self.kind == "switch":
            choice = raw.lower()
            if choice not in ("on", "off"):
                raise ValueError(choice)
            return choice == "on"
        if self.kind == "list":  # comma-separated; "none" is the empty list
            if raw in self.choices:
                return raw
            return [] if raw.lower() == "none" else [m.strip() for m in raw.split(",") if m.strip()]
        return {"int": int, "float": float}.get(self.kind, str)(raw)

    @property
    def bounds(self) -> str:
        """The bounds in words: "over 0, at most 0.1"."""
        words = []
        if self.minimum is not None:
            words.append(("over " if self.exclusive[0] else "at least ") + _number(self.minimum))
        if self.maximum is not None:
            words.append(("under " if self.exclusive[1] else "at most ") + _number(self.maximum))
        return ", ".join(words)

    @property
    def html_bounds(self) -> tuple:
        """The input's min and max: an integer over n is at least n + 1."""
        step = 1 if self.kind == "int" else 0
        low, high = self.minimum, self.maximum
        low = low + step if low is not None and self.exclusive[0] else low
        high = high - step if high is not None and self.exclusive[1] else high
        return low, high


def _number(x) -> str:
    return format(x, "," if isinstance(x, int) else "g")


def _kind(arms: list, default) -> tuple[str, tuple]:
    literals = [v for a in arms if get_origin(a) is Literal for v in get_args(a)]
    if any(get_origin(a) is list for a in arms):
        return "list", tuple(literals)
    if literals:
        return "literal", tuple(literals)
    if bool in arms:  # off by default: a checkbox; else auto (the default) / on / off
        return ("checkbox" if default is False else "switch"), ()
    return ("int" if int in arms else "float" if float in arms else "str"), ()


def _spec(name: str, field) -> Spec:
    arms = [a for a in _arms(field.annotation) if a is not NoneType]
    default = field.get_default(call_default_factory=True)
    kind, choices = _kind(arms, default)
    label, group = LAYOUT.get(name, (field.title or name.replace("_", " ").capitalize(), "all"))
    return Spec(
        name, label, group, kind, default, choices, description=field.description or "",
        **_bounds(field.metadata),
    )  # fmt: skip


def _bounds(metadata) -> dict:
    out, exclusive = {}, [False, False]
    for rule in metadata:
        if isinstance(rule, annotated_types.Gt):
            out["minimum"], exclusive[0] = rule.gt, True
        elif isinstance(rule, annotated_types.Ge):
            out["minimum"] = rule.ge
        elif isinstance(rule, annotated_types.Lt):
            out["maximum"], exclusive[1] = rule.lt, True
        elif isinstance(rule, annotated_types.Le):
            out["maximum"] = rule.le
    return {**out, "exclusive": tuple(exclusive)}


SPECS = [_spec(name, field) for name, field in Hyperparameters.model_fields.items()]


def hyperparameters_from(post) -> dict:
    params, errors = {}, []
    for spec in SPECS:
        raw = post.get(f"hp_{spec.name}", "").strip()
        if spec.kind == "checkbox":
            if raw:
                params[spec.name] = True
            continue
        if not raw or (spec.kind == "switch" and raw.lower() == "auto"):
            continue
        try:
            params[spec.name] = spec.parse(raw)
        except ValueError:
            wanted = "auto, on or off" if spec.kind == "switch" else "a number"
            errors.append(
                FieldError(
                    field=f"hyperparameters.{spec.name}", message=f"{spec.label}: not {wanted}"
                )
            )
    if errors:
        raise ServiceError("Invalid hyperparameters", status=422, errors=errors)
    return params


def _shown_default(spec: Spec) -> str:
    if isinstance(spec.default, list):
        return ",".join(spec.default)
    if spec.default is None:
        return "auto" if spec.kind == "switch" else "the technique's"
    if spec.kind == "switch":
        return "on" if spec.default else "off"
    return str(spec.default)


def form_fields(
    post, errors: dict[str, list[str]], choices: dict[str, list[tuple]] | None = None
) -> list[dict]:
    """The hyperparameter fields to draw: kind, the value posted, the default, the bounds, the
    errors, and for a choice field its options ((value, label) pairs: a Literal's values, or
    `choices` for a field the view fills, such as GRPO's reward model)."""
    out = []
    for spec in SPECS:
        offered = (choices or {}).get(spec.name)
        kind = "choice" if offered is not None else spec.kind
        kind = "number" if kind in ("int", "float") else kind
        options = [(str(v), label) for v, label in offered or []]
        if kind == "literal":
            options = [(v, v) for v in spec.choices]
        out.append(
            {
                "name": spec.name,
                "label": spec.label,
                "group": spec.group,
                "kind": kind,
                "value": post.get(f"hp_{spec.name}", ""),
                "default": _shown_default(spec),
                "errors": errors.get(f"hyperparameters.{spec.name}", []),
                "options": options,
                "min": spec.html_bounds[0],
                "max": spec.html_bounds[1],
                "step": 1 if spec.kind == "int" else "any",
                "help": "; ".join(filter(None, (spec.description, spec.bounds))),
            }
        )
    return out
