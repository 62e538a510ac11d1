"""Memory estimate for a training run, from a decoder-only model's config (no weights loaded).

Shown on the experiment form before a run is queued, and used to refuse runs that no live
worker can hold. Every figure is a rule of thumb; a real run differs by allocator slack.

Per parameter (Hugging Face "Model training anatomy" doc, transformers/model_memory_anatomy):
- full fine-tuning, AdamW, bf16 mixed precision: weights 6 B (bf16 copy + fp32 master),
  gradients 2 B (bf16, as in the ZeRO paper's 16 B/param count), AdamW m and v 8 B: 16 B/param.
  Without bf16 (CPU): fp32 weights 4 B, gradients 4 B, AdamW 8 B: still 16 B/param.
- LoRA / LoHa / IA3 / prefix tuning: frozen base at 2 B (bf16) or 4 B (fp32); each trainable
  parameter in fp32 with its gradient and AdamW state: 4 + 4 + 8 = 16 B.
- QLoRA (Dettmers et al. 2023, arXiv:2305.14314): the decoder's linear layers in 4-bit NF4,
  0.5 B, plus 0.127 bits/param of quantisation constants with double quantisation; embeddings,
  lm_head and norms stay at 2 B; adapters as LoRA. Needs CUDA (bitsandbytes). Gradient
  checkpointing defaults on, as peft's prepare_model_for_kbit_training turns it on.
- DPO scores a chosen and a rejected completion per example, so twice the sequences. Its
  frozen reference model is free with LoRA (adapters disabled) and one more bf16 copy with full.
- A reward model (TRL's RewardTrainer) scores a chosen and a rejected sequence per example, as
  DPO, through a one-output score head instead of the language-model head: no vocabulary-wide
  logits, and no reference model.
- GRPO (TRL's GRPOTrainer) keeps the policy (LoRA or full), its reference when kl_coef > 0
  (free with LoRA, a bf16 copy with full) and the frozen reward model (its base's parameter
  count, at 2 B or 4 B). It trains on prompt + completion sequences of max_length with logits
  for the completion tokens only; it samples the completions first, without gradients, so the
  generation's KV cache (2 x layers x kv width x tokens, 16-bit) is counted when larger than
  the training activations, not beside them.

Activations (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
Models"): 34·s·b·h bytes per layer in 16-bit plus 5·a·s²·b for the attention scores. We assume
SDPA / flash attention, which never stores the s×s scores, so that term is dropped. With
gradient checkpointing only each layer's input (2·s·b·h) is kept, plus one layer recomputed in
full. The logits for the loss add b·s·vocab·4 B in fp32, twice (logits and their gradient).
LoRA's dropout (lora_dropout > 0, peft's default 0.05) adds to that per targeted module: peft
applies each module's own dropout to the layer input before lora_A, so the dropped-out copy
(16-bit on CUDA, fp32 on CPU) and its mask (1 byte) are kept for the backward pass: for the
four attention projections, 12·s·b·h bytes a layer, a third more than the formula. Measured on
one H200 (bench/RESULTS.md, issue 15): 13B LoRA at 8 x 512 without checkpointing peaked 6 %
over the estimate that left this out.
Overhead: 1 GB for the CUDA context and framework slack, 0.3 GB on CPU.

The usual table (LLaMA-Factory README, "Hardware Requirement") for 7B: full bf16 120 GB,
LoRA 16 GB, 4-bit QLoRA 6 GB, i.e. mostly weights at a tiny batch; other rule-of-thumb
tables say "2×80 GB, ~40 GB, ~24 GB" at a working batch. Training's defaults (batch 8 × 1024
tokens, hyperparameters.py) land between the two.
"""

from dataclasses import asdict, dataclass
from typing import Any

from experiments.training.hyperparameters import LORA_MODULES, Hyperparameters, ia3_feedforward

GB = 10**9
TECHNIQUES = ("full", "lora", "qlora", "prefix", "ia3", "loha", "dpo", "reward", "grpo")
# Techniques that train LoRA adapters or all weights, as their base field says.
BASE_FIELD = {"dpo": "dpo_base", "reward": "rl_base", "grpo": "rl_base"}
DEVICES = ("cuda", "cpu")
ADAPTER_BYTES = {"weights": 4, "gradients": 4, "optimizer": 8}  # fp32 weight, grad, AdamW m+v
NF4_BYTES = 0.5 + 0.127 / 8  # 4-bit weights + double-quantised constants (QLoRA paper)
OVERHEAD = {"cuda": GB, "cpu": 3 * GB // 10}


@dataclass(frozen=True)
class Estimate:
    total_params: int
    trainable_params: int
    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    overhead_bytes: int  # CUDA context / framework slack
    total_bytes: int  # on each GPU (or each process on a CPU worker)
    needs_cuda: bool
    gpus: int = 1  # how many GPUs (processes) the run trains on, each holding total_bytes
    sharded: bool = False  # FSDP: weights, gradients and optimizer split across the GPUs

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name, value in list(data.items()):
            if name.endswith("_bytes"):
                data[name.removesuffix("_bytes") + "_human"] = human_bytes(value)
        data["total_gb"] = round(self.total_bytes / GB, 1)
        data["all_gpus_gb"] = round(self.total_bytes * self.gpus / GB, 1)
        return data


def human_bytes(n: int) -> str:
    return f"{n / GB:.1f} GB" if n >= GB else f"{n / 10**6:.1f} MB"


def defaults(technique: str, device: str = "cuda") -> dict[str, Any]:
    """The hyperparameters assumed when the form leaves them out: training's own defaults."""
    trained = Hyperparameters().model_dump()  # validated: derived defaults filled in
    return {
        **{name: trained[name] for name in ESTIMATED},
        # The QLoRA recipe (peft.prepare_model_for_kbit_training) checkpoints by default.
        "gradient_checkpointing": technique == "qlora",
        "bf16": device == "cuda",
    }


ESTIMATED = (
    "per_device_train_batch_size",
    "max_length",
    "lora_r",
    "lora_target_modules",
    "num_virtual_tokens",
    "ia3_target_modules",
    "ia3_feedforward_modules",
    "dpo_base",
    "rl_base",
    "lora_dropout",
    "max_completion_length",
    "kl_coef",
    "gpus",
    "fsdp",
)


def _head_dim(config) -> int:
    # Some configs (Mistral, Qwen2 in transformers 5) carry head_dim=None.
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _kv_dim(config) -> int:
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return kv_heads * _head_dim(config)


def linear_shapes(config) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each linear layer in one decoder layer."""
    h, inter = config.hidden_size, config.intermediate_size
    q, kv = config.num_attention_heads * _head_dim(config), _kv_dim(config)
    return {
        "q_proj": (h, q),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (q, h),
        "gate_proj": (h, inter),
        "up_proj": (h, inter),
        "down_proj": (inter, h),
    }


def _bias_params(config) -> int:
    """Biases of one decoder layer: Llama's attention_bias covers q/k/v/o, Qwen2 has q/k/v."""
    out = {name: shape[1] for name, shape in linear_shapes(config).items()}
    attention_bias = bool(getattr(config, "attention_bias", False))
    total = out["q_proj"] + out["k_proj"] + out["v_proj"]
    total = total if attention_bias or config.model_type == "qwen2" else 0
    total += out["o_proj"] if attention_bias else 0
    if getattr(config, "mlp_bias", False):
        total += out["gate_proj"] + out["up_proj"] + out["down_proj"]
    return total


def _quantizable_params(config) -> int:
    """Weights of the decoder's linear layers: what bitsandbytes stores in 4-bit."""
    per_layer = sum(i * o for i, o in linear_shapes(config).values())
    return config.num_hidden_layers * per_layer


def count_params(config) -> int:
    h = config.hidden_size
    embeddings = config.vocab_size * h * (1 if config.tie_word_embeddings else 2)
    norms = config.num_hidden_layers * 2 * h + h  # two RMSNorms per layer, one final
    biases = config.num_hidden_layers * _bias_params(config)
    return embeddings + _quantizable_params(config) + biases + norms


def _targets(target_modules: list[str] | str, field: str = "lora_target_modules") -> set[str]:
    names = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    if "all-linear" in names:
        return set(LORA_MODULES)
    unknown = sorted(set(names) - set(LORA_MODULES))
    if unknown or not names:
        raise ValueError(
            f"{field} must name some of {', '.join(LORA_MODULES)} or 'all-linear'"
            f"; unknown: {unknown}"
        )
    return set(names)


def lora_params(config, r: int, target_modules: list[str]) -> int:
    if r <= 0:
        raise ValueError(f"lora_r must be positive, got {r}")
    shapes = linear_shapes(config)
    per_layer = sum(r * sum(shapes[name]) for name in _targets(target_modules))
    return config.num_hidden_layers * per_layer


def loha_params(config, r: int, target_modules: list[str]) -> int:
    """peft's LoHa on a linear layer: two Hadamard factors, each a (out x r)(r x in) pair
    (hada_w1_a/b, hada_w2_a/b), so twice LoRA's count at the same r."""
    return 2 * lora_params(config, r, target_modules)


def ia3_params(config, target_modules: list[str], feedforward_modules: list[str] | None) -> int:
    """peft's IA3: one vector per targeted linear layer, the size of its input for a
    feed-forward module (rescales what goes in) and of its output otherwise. None: the
    default feed-forward modules that are targeted, as training takes it."""
    targets = _targets(target_modules, "ia3_target_modules")
    feedforward = set(ia3_feedforward(sorted(targets), feedforward_modules))
    if not feedforward <= targets:
        raise ValueError(
            f"ia3_feedforward_modules must be some of ia3_target_modules; "
            f"not targeted: {sorted(feedforward - targets)}"
        )
    shapes = linear_shapes(config)
    per_layer = sum(shapes[name][0 if name in feedforward else 1] for name in targets)
    return config.num_hidden_layers * per_layer


def prefix_params(config, num_virtual_tokens: int) -> int:
    """peft's PrefixEncoder (no projection): one key and one value vector per layer per token,
    sized num_key_value_heads * head_dim since peft's GQA fix (peft#1901)."""
    if num_virtual_tokens <= 0:
        raise ValueError(f"num_virtual_tokens must be positive, got {num_virtual_tokens}")
    return num_virtual_tokens * config.num_hidden_layers * 2 * _kv_dim(config)


def activation_bytes(
    config,
    *,
    sequences: int,
    max_length: int,
    checkpointing: bool,
    bf16: bool,
    logit_tokens: int | None = None,
    dropout_inputs: int = 0,
) -> int:
    """Activations of `sequences` x `max_length` tokens; the fp32 logits (and their gradient)
    of `logit_tokens` per sequence, every token unless given (0: a score head, no logits);
    `dropout_inputs`: the input features a layer's LoRA dropouts copy (each with its mask)."""
    tokens = sequences * max_length
    h, layers = config.hidden_size, config.num_hidden_layers
    one_layer = 34 * tokens * h  # Korthikanti et al., 16-bit, without the s² attention term
    one_layer += dropout_inputs * tokens * 3  # a 16-bit dropped-out copy + a 1-byte mask
    body = 2 * tokens * h * layers + one_layer if checkpointing else one_layer * layers
    body = body if bf16 else body * 2  # the formula counts 2-byte activations
    per_sequence = max_length if logit_tokens is None else logit_tokens
    logits = sequences * per_sequence * config.vocab_size * 4 * 2  # fp32 logits and gradient
    return body + logits


def kv_cache_bytes(config, *, sequences: int, max_length: int) -> int:
    """Generation's key/value cache in 16-bit: a key and a value per layer per token."""
    return 2 * config.num_hidden_layers * _kv_dim(config) * sequences * max_length * 2


def _positive(hp: dict[str, Any], key: str) -> int:
    value = int(hp[key])
    if value <= 0:
        raise ValueError(f"{key} must be positive, got {value}")
    return value


def estimate(
    config,
    *,
    technique: str,
    hyperparameters: dict[str, Any],
    device: str = "cuda",
    reward_params: int | None = None,
) -> Estimate:
    """`reward_params`: GRPO's reward model's parameter count (default: the same base)."""
    if technique not in TECHNIQUES:
        raise ValueError(f"unknown technique {technique!r}; expected one of {TECHNIQUES}")
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {DEVICES}")
    hp = {**defaults(technique, device), **hyperparameters}
    batch = _positive(hp, "per_device_train_batch_size")
    max_length = _positive(hp, "max_length")
    bf16, checkpointing = bool(hp["bf16"]), bool(hp["gradient_checkpointing"])
    method = hp[BASE_FIELD[technique]] if technique in BASE_FIELD else technique
    if technique in BASE_FIELD and method not in ("full", "lora"):
        raise ValueError(f"{BASE_FIELD[technique]} must be 'lora' or 'full', got {method!r}")
    if technique == "prefix" and checkpointing:
        raise ValueError("prefix tuning does not work with gradient checkpointing (peft refuses)")

    total = count_params(config)
    if technique == "reward":
        # AutoModelForSequenceClassification: a one-output score head instead of lm_head.
        untied_head = 0 if config.tie_word_embeddings else config.vocab_size * config.hidden_size
        total += config.hidden_size - untied_head
    weight = 2 if bf16 else 4
    if method == "full":
        trainable = total
        weights = total * (weight + 4 if bf16 else weight)  # bf16 copy + fp32 master
        gradients, optimizer = total * weight, total * 8
    else:
        if method == "prefix":
            trainable = prefix_params(config, int(hp["num_virtual_tokens"]))
        elif method == "ia3":
            trainable = ia3_params(config, hp["ia3_target_modules"], hp["ia3_feedforward_modules"])
        elif method == "loha":
            trainable = loha_params(config, int(hp["lora_r"]), hp["lora_target_modules"])
        else:
            trainable = lora_params(config, int(hp["lora_r"]), hp["lora_target_modules"])
        if technique == "reward":
            trainable += config.hidden_size  # the score head trains beside the adapters
        quantized = _quantizable_params(config) if method == "qlora" else 0
        frozen = int(quantized * NF4_BYTES) + (total - quantized) * weight
        weights = frozen + trainable * ADAPTER_BYTES["weights"]
        gradients = trainable * ADAPTER_BYTES["gradients"]
        optimizer = trainable * ADAPTER_BYTES["optimizer"]
    if method == "full" and (
        technique == "dpo" or (technique == "grpo" and float(hp["kl_coef"]) > 0)
    ):
        weights += total * weight  # the frozen reference model is a second copy
    if technique == "grpo":
        weights += (total if reward_params is None else reward_params) * weight  # reward model

    dropout_inputs = 0
    if method in ("lora", "qlora") and float(hp["lora_dropout"]) > 0:
        shapes = linear_shapes(config)
        dropout_inputs = sum(shapes[name][0] for name in _targets(hp["lora_target_modules"]))
    pairs = technique in ("dpo", "reward")  # a chosen and a rejected sequence per example
    logit_tokens = None
    if technique == "reward":
        logit_tokens = 0  # a score head: one number per sequence
    elif technique == "grpo":
        logit_tokens = _positive(hp, "max_completion_length")
    activations = activation_bytes(
        config,
        sequences=2 * batch if pairs else batch,
        max_length=max_length,
        checkpointing=checkpointing,
        bf16=bf16,
        logit_tokens=logit_tokens,
        dropout_inputs=dropout_inputs,
    )
    if technique == "grpo":
        activations = max(
            activations, kv_cache_bytes(config, sequences=batch, max_length=max_length)
        )
    gpus = _positive(hp, "gpus")
    sharded = bool(hp.get("fsdp")) and method == "full" and gpus > 1
    if sharded:
        # FSDP full shard: each GPU keeps 1/N of the weights, gradients and optimizer state
        # (and gathers one layer's full weights at a time: counted as one layer, in bf16).
        layer = (total - config.vocab_size * config.hidden_size) // config.num_hidden_layers
        weights = weights // gpus + layer * weight
        gradients, optimizer = gradients // gpus, optimizer // gpus
    overhead = OVERHEAD[device]
    return Estimate(
        total_params=total,
        trainable_params=trainable,
        weights_bytes=weights,
        gradients_bytes=gradients,
        optimizer_bytes=optimizer,
        activations_bytes=activations,
        overhead_bytes=overhead,
        total_bytes=weights + gradients + optimizer + activations + overhead,
        needs_cuda=technique == "qlora" or sharded,  # bitsandbytes; FSDP2 on NCCL
        gpus=gpus,
        sharded=sharded,
    )
