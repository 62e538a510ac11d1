"""Hyperparameters per technique: defaults that follow practice, and one clear error per
field. Validated with pydantic (shipped with django-ninja) so bounds live beside defaults."""

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from experiments.models import Technique
from finetune_hub.errors import FieldError, ServiceError, from_pydantic, invalid

# Learning rates from common practice: full fine-tuning 2e-5, LoRA/QLoRA 2e-4 (QLoRA paper),
# prefix tuning 1e-2 (peft examples), IA3 3e-3 (the (IA)^3 paper, Liu et al. 2022, and
# peft's IA3 examples), LoHa as LoRA (LyCORIS), DPO 5e-6 with LoRA and 5e-7 full (Zephyr).
DEFAULT_LEARNING_RATE = {
    Technique.FULL: 2e-5,
    Technique.LORA: 2e-4,
    Technique.QLORA: 2e-4,
    Technique.PREFIX: 1e-2,
    Technique.IA3: 3e-3,
    Technique.LOHA: 2e-4,
}
# The linear layers of a Llama-style block LoRA (and LoHa) can target; attention's four by
# default.
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEFAULT_LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
# IA3 rescales the keys, the values and the feed-forward's inner activation (the input of
# down_proj): peft's default for Llama-style models. A feed-forward module's vector scales its
# input, any other module's its output.
DEFAULT_IA3_MODULES = ("k_proj", "v_proj", "down_proj")
DEFAULT_IA3_FEEDFORWARD = ("down_proj",)


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    learning_rate: float | None = Field(None, gt=0, le=0.1)
    num_train_epochs: float = Field(3, gt=0, le=100)
    max_steps: int = Field(-1, ge=-1, description="-1: train for num_train_epochs")
    warmup_ratio: float = Field(0.03, ge=0, le=0.5)
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    weight_decay: float = Field(0.0, ge=0, le=1)
    per_device_train_batch_size: int = Field(8, ge=1, le=1024)
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024)
    max_length: int = Field(1024, ge=8, le=1_048_576)
    seed: int = Field(42, ge=0)
    eval_steps: int = Field(50, ge=1)
    save_steps: int = Field(50, ge=1)
    logging_steps: int = Field(5, ge=1)
    gradient_checkpointing: bool = False
    # Several GPUs for one run (torchrun, one process a GPU, on one host): data parallel
    # (DDP) for every technique; per_device_train_batch_size is each GPU's, so the global
    # batch is gpus x per-device batch x accumulation. On a CPU worker, `gpus` processes
    # train together over gloo.
    gpus: int = Field(1, ge=1, le=8)
    # Early stopping on eval loss (guards.py): evaluations without an improvement larger than
    # the minimum delta before training stops, the best checkpoint kept as the output. Blank:
    # on (3) when the training split is under 1,000 examples; 0: off.
    early_stopping_patience: int | None = Field(None, ge=0, le=1000)
    early_stopping_min_delta: float = Field(0.0, ge=0)
    # Speed switches (experiments/training/speed.py); None: on where it pays, a CUDA worker.
    packing: bool | None = None
    attention: Literal["auto", "varlen", "sdpa", "eager"] = "auto"
    liger_kernel: bool | None = None
    fused_adamw: bool | None = None
    bf16_adapter_inputs: bool | None = None
    qlora_bf16_norms: bool | None = None
    # LoRA / QLoRA, and DPO with dpo_base="lora"; LoHa takes lora_r, lora_alpha and
    # lora_target_modules (its r is each Hadamard factor's rank, its alpha scales alpha/r)
    lora_r: int = Field(16, gt=0, le=1024)
    lora_alpha: int = Field(32, gt=0, le=4096)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: list(DEFAULT_LORA_MODULES)
    )
    use_dora: bool = False
    # IA3: the modules that get a learned vector, and which of them count as feed-forward
    ia3_target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_IA3_MODULES))
    # None: down_proj when it is targeted (peft's default for Llama-style models)
    ia3_feedforward_modules: list[str] | None = Field(None, validate_default=True)
    # QLoRA
    bnb_4bit_use_double_quant: bool = True
    # prefix tuning
    num_virtual_tokens: int = Field(20, ge=1, le=1024)
    # DPO
    beta: float = Field(0.1, gt=0, le=10)
    dpo_base: Literal["lora", "full"] = "lora"

    @model_validator(mode="after")
    def _modules_known(self):
        if isinstance(self.lora_target_modules, list):
            unknown = [m for m in self.lora_target_modules if m not in LORA_MODULES]
            if unknown or not self.lora_target_modules:
                raise ValueError(
                    f"lora_target_modules: unknown {unknown}; choose from {list(LORA_MODULES)} "
                    "or 'all-linear'"
                )
        return self

    @field_validator("ia3_target_modules")
    @classmethod
    def _ia3_modules_known(cls, modules: list[str]) -> list[str]:
        unknown = [m for m in modules if m not in LORA_MODULES]
        if unknown or not modules:
            found = f"unknown {unknown}" if unknown else "none named"
            raise ValueError(f"{found}; choose some of {list(LORA_MODULES)}")
        return modules

    @field_validator("ia3_feedforward_modules")
    @classmethod
    def _ia3_feedforward_targeted(cls, modules: list[str] | None, info: ValidationInfo):
        targets = info.data.get("ia3_target_modules")
        if modules is None:
            return ia3_feedforward(targets or [], None)
        outside = [m for m in modules if targets is not None and m not in targets]
        if outside:
            raise ValueError(
                f"{outside} not in ia3_target_modules {targets}: feed-forward modules are "
                "some of the targeted ones"
            )
        return modules


def ia3_feedforward(targets: list[str], feedforward: list[str] | None) -> list[str]:
    """IA3's feed-forward modules: as given, or (None) the default ones that are targeted."""
    if feedforward is None:
        return [m for m in DEFAULT_IA3_FEEDFORWARD if m in targets]
    return list(feedforward)


def default_learning_rate(technique: str, dpo_base: str) -> float:
    if technique == Technique.DPO:
        return 5e-6 if dpo_base == "lora" else 5e-7
    return DEFAULT_LEARNING_RATE[technique]


def technique_require(technique: str) -> None:
    if technique not in Technique.values:
        raise invalid(
            f"Unknown technique {technique[:100]!r}; one of {', '.join(Technique.values)}",
            field="technique",
        )


def validate(technique: str, raw: dict | None, *, context_length: int | None) -> dict:
    """The full hyperparameter set for a technique, or a 422 naming each bad field."""
    technique_require(technique)
    try:
        params = Hyperparameters.model_validate(raw or {})
    except ValidationError as exc:
        raise ServiceError(
            detail="Invalid hyperparameters",
            status=422,
            errors=from_pydantic(exc, under="hyperparameters"),
        ) from None
    if context_length and params.max_length > context_length:
        raise ServiceError(
            detail="Invalid hyperparameters",
            status=422,
            errors=[
                FieldError(
                    field="hyperparameters.max_length",
                    message=f"{params.max_length} is over the model's context of {context_length}",
                )
            ],
        )
    if params.early_stopping_patience and params.save_steps % params.eval_steps:
        raise ServiceError(
            detail="Invalid hyperparameters",
            status=422,
            errors=[
                FieldError(
                    field="hyperparameters.early_stopping_patience",
                    message=(
                        f"early stopping keeps the best checkpoint, so save_steps "
                        f"({params.save_steps}) must be a multiple of eval_steps "
                        f"({params.eval_steps})"
                    ),
                )
            ],
        )
    if params.learning_rate is None:
        params.learning_rate = default_learning_rate(technique, params.dpo_base)
    return params.model_dump()
