"""Metrics through the `evaluate` interface. Each metric is a local evaluate module in this
folder (evaluate.load by name needs a hub); a name that is not here is handed to
evaluate.load as it is, which works when the machine is online.

Every module returns, besides its corpus score, the per-sample scores and the per-sample
statistics the corpus score is computed from, so confidence intervals and paired tests
resample samples and recompute the real corpus metric (as sacreBLEU's own bootstrap does)."""

from functools import cache
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODULES = {
    "bleu": "bleu",
    "chrf": "chrf",
    "ter": "ter",
    "rouge": "rouge",
    "exact_match": "exact_match",
    "accuracy": "accuracy",
    "f1": "f1",
}
# What each module reports, for the forms and the API.
REPORTED = {
    "bleu": ["bleu"],
    "chrf": ["chrf"],
    "ter": ["ter"],
    "rouge": ["rouge1", "rouge2", "rougeL", "rougeLsum"],
    "exact_match": ["exact_match"],
    "accuracy": ["accuracy"],
    "f1": ["f1"],
}
LOWER_IS_BETTER = {"ter", "loss", "perplexity"}


@cache
def load(name: str):
    import evaluate

    if name in MODULES:
        return evaluate.load(str(HERE / MODULES[name]))
    return evaluate.load(name)


@cache
def _sacrebleu(name: str):
    from sacrebleu.metrics import BLEU, CHRF, TER

    return {"bleu": BLEU, "chrf": CHRF, "ter": TER}[name]()


def score_from_stats(name: str, stats: np.ndarray) -> float:
    """The corpus score of the samples whose statistics are the rows of `stats`."""
    if name in ("bleu", "chrf", "ter"):
        return float(_sacrebleu(name)._compute_score_from_stats(list(stats.sum(0))).score)
    if name == "f1":
        return macro_f1(stats[:, 0], stats[:, 1])
    return float(stats[:, 0].mean())


def macro_f1(predicted: np.ndarray, reference: np.ndarray) -> float:
    """Macro-averaged F1 over the labels the references use (scikit-learn's default set
    would also count labels that only appear as predictions; we report both ways alike)."""
    labels = np.union1d(predicted, reference)
    f1s = []
    for label in labels:
        tp = np.sum((predicted == label) & (reference == label))
        fp = np.sum((predicted == label) & (reference != label))
        fn = np.sum((predicted != label) & (reference == label))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(f1s))


def text_pair_info(description: str, citation: str = ""):
    """The MetricInfo of a metric over (prediction, reference) strings."""
    import datasets
    import evaluate

    return evaluate.MetricInfo(
        description=description,
        citation=citation,
        inputs_description="predictions: list of str; references: list of str (one each)",
        features=datasets.Features(
            {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
        ),
    )


def match_scores(name: str, predictions: list[str], references: list[str]) -> dict:
    """1 per sample where the prediction equals the reference after stripping whitespace
    (exact match for text, accuracy for labels)."""
    hits = [float(p.strip() == r.strip()) for p, r in zip(predictions, references, strict=True)]
    score = sum(hits) / len(hits) if hits else 0.0
    return {name: {"score": score, "per_sample": hits, "stats": [[h] for h in hits]}}
