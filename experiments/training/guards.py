"""The overfitting guard, before and during training: early stopping on eval loss (on by
default for a small training split), warnings beside the estimate before a run is queued,
and the flag on the live chart when eval loss rises while training loss falls."""

import math

from experiments.training.hyperparameters import trains

SMALL_TRAIN = 1_000  # training examples under which early stopping is on by default
DEFAULT_PATIENCE = 3  # evaluations without improvement before stopping
MAX_EPOCHS = 5
FEW_EXAMPLES = 100
HIGH_RANK = 64  # a LoRA rank that can memorise a small set
# Techniques with a rank (lora_r). LoHa counts: its Hadamard product of two rank-r factors
# reaches rank r squared, so a high r memorises at least as readily as LoRA's. IA3 has no
# rank (one vector per module) and prefix tuning none either.
ADAPTERS = ("lora", "qlora", "loha")
RANK_NAMES = {"loha": "LoHa"}


# Techniques whose eval loss is not what they learn from: GRPO's is a policy-gradient
# objective of freshly sampled completions, so early stopping stays off.
NO_EARLY_STOPPING = ("grpo",)


def early_stopping_patience(params: dict, counts: dict, technique: str = "") -> int:
    """Evaluations without improvement before training stops; 0: off. Blank (None) means on
    (3) when the training split is small, there is an eval split to watch and checkpoints
    are saved at evaluations; else off. Always off for GRPO."""
    if not counts.get("eval") or technique in NO_EARLY_STOPPING:
        return 0
    patience = params.get("early_stopping_patience")
    if patience is None:
        # The best checkpoint must be one that is saved: only where saves fall on evaluations.
        aligned = params.get("save_steps", 50) % params.get("eval_steps", 50) == 0
        return DEFAULT_PATIENCE if counts.get("train", 0) < SMALL_TRAIN and aligned else 0
    return int(patience)


def epochs(params: dict, counts: dict) -> float:
    """Passes over the training split the settings amount to (max_steps wins when set)."""
    train = counts.get("train", 0)
    if params.get("max_steps", -1) in (-1, None) or not train:
        return float(params.get("num_train_epochs", 0))
    per_step = (
        params.get("per_device_train_batch_size", 1)
        * params.get("gradient_accumulation_steps", 1)
        * params.get("gpus", 1)
    )
    return params["max_steps"] * per_step / train


def warnings(technique: str, params: dict, counts: dict) -> list[str]:
    """What the guide warns about, for these settings on this data (nothing is refused)."""
    out = []
    train, passes = counts.get("train", 0), epochs(params, counts)
    patience = early_stopping_patience(params, counts, technique)
    stopping = f"early stopping is on (patience {patience})" if patience else "early stopping off"
    if passes > MAX_EPOCHS:
        out.append(
            f"{passes:.1f} epochs: more than {MAX_EPOCHS} passes over the data usually "
            f"overfits; watch the eval loss ({stopping})"
        )
    uses_lora = technique in ADAPTERS or trains(technique, params) == "lora"
    if uses_lora and params.get("lora_r", 0) >= HIGH_RANK and train < SMALL_TRAIN:
        out.append(
            f"{RANK_NAMES.get(technique, 'LoRA')} r={params['lora_r']} for {train:,} training "
            f"examples: a rank this high can memorise a small set; r 8 to 16 is usual under "
            f"{SMALL_TRAIN:,} examples"
        )
    if train < FEW_EXAMPLES:
        out.append(
            f"Only {train:,} training examples: under {FEW_EXAMPLES} rarely teach a task "
            "and overfit quickly"
        )
    if not counts.get("eval"):
        out.append(
            "No eval examples: overfitting cannot be seen, and early stopping is off "
            "(publish a version with an eval split)"
        )
    return out


def diverging(train: dict | None, evaluation: dict | None, rises: int = 2) -> dict | None:
    """Where eval loss has risen at each of its last `rises` evaluations while the training
    loss fell over the same steps: {"step", "message"} for the live chart, else None.
    Series are {"steps": [...], "values": [...]} as the metrics API returns them."""
    if not train or not evaluation or len(evaluation["values"]) < rises + 1:
        return None
    steps, values = evaluation["steps"], evaluation["values"]
    window = values[-(rises + 1) :]
    if not all(b > a for a, b in zip(window, window[1:], strict=False)):
        return None
    since = steps[-(rises + 1)]
    before = [v for s, v in zip(train["steps"], train["values"], strict=True) if s <= since]
    after = [v for s, v in zip(train["steps"], train["values"], strict=True) if s > since]
    if not before or not after or not min(after) < before[-1]:
        return None
    best = min(range(len(values)), key=values.__getitem__)
    if not all(math.isfinite(v) for v in window):
        return None
    return {
        "step": since,
        "message": (
            f"Overfitting: eval loss has risen since step {since} "
            f"({window[0]:.4g} to {window[-1]:.4g}) while training loss kept falling; "
            f"the lowest eval loss was {values[best]:.4g} at step {steps[best]}"
        ),
    }
