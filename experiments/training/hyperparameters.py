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
from finetune_hub.bounds import INT64_MAX
from finetune_hub.errors import FieldError, ServiceError, from_pydantic, invalid

# Learning rates from common practice: full fine-tuning 2e-5, LoRA/QLoRA 2e-4 (QLoRA paper),
# prefix tuning 1e-2 (peft examples), IA3 3e-3 (the (IA)^3 paper, Liu et al. 2022, and
# peft's IA3 examples), LoHa as LoRA (LyCORIS), DPO 5e-6 with LoRA and 5e-7 full (Zephyr);
# a reward model 1e-4 with LoRA and 1e-5 full (TRL's reward modelling examples), GRPO 1e-5
# with LoRA and 1e-6 full (GRPOConfig's default, the DeepSeekMath setting).
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
    # Full fine-tuning across those GPUs with FSDP (PyTorch's fully_shard, through accelerate):
    # each GPU holds 1/gpus of the weights, gradients and optimizer state, so a model whose
    # full fine-tune does not fit one GPU trains on several. CUDA workers only.
    fsdp: bool = False
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
    # RLHF: the reward model and the GRPO policy train LoRA adapters (r, alpha, target modules
    # as LoRA's) or all weights.
    rl_base: Literal["lora", "full"] = "lora"
    # GRPO: the reward model is a finished reward-model run of the same team (its id); each
    # prompt gets num_generations sampled completions, scored by it, and each completion's
    # advantage is its reward against its group's mean. kl_coef (TRL's beta) pulls the policy
    # towards the base model (0: no reference model is kept).
    reward_run: int | None = Field(None, ge=1, le=INT64_MAX)  # an id the database can hold
    num_generations: int = Field(4, ge=2, le=64)
    max_completion_length: int = Field(128, ge=1, le=32_768)
    temperature: float = Field(1.0, gt=0, le=2)
    kl_coef: float = Field(0.04, ge=0, le=10)

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


RL_LEARNING_RATE = {  # (with LoRA, full)
    Technique.DPO: (5e-6, 5e-7),
    Technique.REWARD: (1e-4, 1e-5),
    Technique.GRPO: (1e-5, 1e-6),
}
# What a technique trains for the preference and RL techniques: LoRA adapters or all weights.
BASE_FIELD = {Technique.DPO: "dpo_base", Technique.REWARD: "rl_base", Technique.GRPO: "rl_base"}


def trains(technique: str, params: dict) -> str:
    """ "lora" or "full" for DPO, a reward model and GRPO (by their base field); else the
    technique itself."""
    field = BASE_FIELD.get(technique)
    return params.get(field, "lora") if field else technique


def default_learning_rate(technique: str, params: dict) -> float:
    if technique in RL_LEARNING_RATE:
        lora, full = RL_LEARNING_RATE[technique]
        return lora if trains(technique, params) == "lora" else full
    return DEFAULT_LEARNING_RATE[technique]


def _field_error(field: str, message: str) -> ServiceError:
    return ServiceError(
        detail="Invalid hyperparameters",
        status=422,
        errors=[FieldError(field=f"hyperparameters.{field}", message=message)],
    )


def _check_grpo(technique: str, params: Hyperparameters) -> None:
    """GRPO's settings fit together; other techniques take no reward model."""
    if technique != Technique.GRPO:
        if params.reward_run is not None:
            raise _field_error("reward_run", "only GRPO trains against a reward model")
        return
    if params.early_stopping_patience:
        raise _field_error(
            "early_stopping_patience",
            "GRPO's eval loss is not what it learns from (a policy-gradient objective of "
            "sampled completions): early stopping is off for GRPO; watch eval reward",
        )
    if params.reward_run is None:
        raise _field_error(
            "reward_run", "GRPO needs a reward model: the id of a finished reward-model run"
        )
    if params.max_completion_length >= params.max_length:
        raise _field_error(
            "max_completion_length",
            f"{params.max_completion_length} leaves no room for a prompt in max_length "
            f"{params.max_length} (the two bound a prompt and its completion together)",
        )
    # Each batch holds whole groups of completions of one prompt (TRL's GRPOConfig checks the
    # same at the start of training; here it is refused before the run is queued).
    per_batch = params.per_device_train_batch_size * params.gpus
    if per_batch % params.num_generations:
        raise _field_error(
            "num_generations",
            f"{params.num_generations} completions per prompt must divide the batch of "
            f"{per_batch} (per_device_train_batch_size {params.per_device_train_batch_size}"
            f" x gpus {params.gpus}) so that each batch holds whole groups",
        )


def _check_fsdp(technique: str, params: Hyperparameters) -> None:
    """FSDP shards what a full fine-tune trains; adapters are small enough for data parallel."""
    if not params.fsdp:
        return
    if technique != Technique.FULL:
        raise _field_error(
            "fsdp",
            f"FSDP shards a full fine-tune (technique full); {technique} trains adapters or a "
            "reference pair that data parallel (gpus > 1 without fsdp) already spreads",
        )
    if params.gpus < 2:
        raise _field_error("fsdp", "FSDP shards the model across GPUs: set gpus to 2 or more")


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
        raise _field_error(
            "max_length", f"{params.max_length} is over the model's context of {context_length}"
        )
    if params.early_stopping_patience and params.save_steps % params.eval_steps:
        raise _field_error(
            "early_stopping_patience",
            f"early stopping keeps the best checkpoint, so save_steps ({params.save_steps}) "
            f"must be a multiple of eval_steps ({params.eval_steps})",
        )
    _check_grpo(technique, params)
    _check_fsdp(technique, params)
    if params.learning_rate is None:
        params.learning_rate = default_learning_rate(technique, params.model_dump())
    return params.model_dump()
