"""Metrics through the `evaluate` interface. Each metric is a local evaluate module in this
folder (evaluate.load by name needs a hub). A metric name from a request is looked up in an
allow-list and nothing else: the local modules, the modules a site admin lists in
EXTRA_METRIC_MODULES (name -> path, set by the operator, never by a request) and, only when
ALLOW_HUB_METRICS is on, hub ids. A name is never a path, so no uploaded file can be run as a
metric script, and the check happens before anything is imported.

Every module returns, besides its corpus score, the per-sample scores and the per-sample
statistics the corpus score is computed from, so confidence intervals and paired tests
resample samples and recompute the real corpus metric (as sacreBLEU's own bootstrap does)."""

import re
from functools import cache
from pathlib import Path

import numpy as np
from django.conf import settings

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


# Hub metric ids: "name" or "namespace/name", the hub's own repo id syntax (no path parts).
HUB_METRIC_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?")


class UnknownMetric(ValueError):
    pass


def available() -> list[str]:
    """The metric names a request may use (besides 'loss', which the model computes)."""
    return [*MODULES, *settings.EXTRA_METRIC_MODULES]


def source(name: str) -> str:
    """What evaluate.load is given for an allowed `name`; UnknownMetric otherwise. Pure: it
    imports and reads nothing, so it can run while a request is validated."""
    if not isinstance(name, str):
        raise UnknownMetric("a metric name is text")
    if name in MODULES:
        return str(HERE / MODULES[name])
    if name in settings.EXTRA_METRIC_MODULES:
        return str(settings.EXTRA_METRIC_MODULES[name])
    if settings.ALLOW_HUB_METRICS and HUB_METRIC_ID.fullmatch(name) and ".." not in name:
        return name
    raise UnknownMetric(f"unknown metric {name[:100]!r}; choose from {', '.join(available())}")


@cache
def load(name: str):
    """The evaluate module of an allowed metric name (see `source`)."""
    path = source(name)
    import evaluate

    return evaluate.load(path)


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
    if name == "loss":  # rows: (summed negative log-likelihood, tokens)
        return float(stats[:, 0].sum() / max(stats[:, 1].sum(), 1))
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
