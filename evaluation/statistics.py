"""Confidence intervals and significance: bootstrap over samples for corpus metrics, paired
bootstrap for A/B differences (and the paired test of two evaluations that A/B comparisons
and the forgetting check read), Wilson intervals and the sign test for human votes,
Bradley-Terry strengths for more than two subjects, Cohen's kappa for agreement."""

import math

import numpy as np
from scipy.special import expit
from scipy.stats import binomtest, norm

from evaluation.metrics import LOWER_IS_BETTER, score_from_stats

RESAMPLES = 1000
SEED = 12345
Z95 = float(norm.ppf(0.975))
SIGNIFICANCE = 0.05


def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _interval95(samples, axis=None):
    """The 2.5th and 97.5th percentiles: the percentile interval every bootstrap here uses."""
    return np.percentile(samples, [2.5, 97.5], axis=axis)


def bootstrap_ci(name: str, stats: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED):
    """95% percentile interval of the corpus metric over resampled samples."""
    if len(stats) < 2:
        value = score_from_stats(name, stats) if len(stats) else float("nan")
        return value, value
    scores = [score_from_stats(name, stats[idx]) for idx in _indices(len(stats), resamples, seed)]
    low, high = _interval95(scores)
    return float(low), float(high)


def paired_bootstrap(
    name: str,
    stats_a: np.ndarray,
    stats_b: np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> dict:
    """Difference b - a on the same samples, its 95% interval and a two-sided p-value
    (Koehn 2004; the p-value as sacreBLEU computes it, from the centred distribution)."""
    if len(stats_a) != len(stats_b):
        raise ValueError("paired samples must line up")
    real = score_from_stats(name, stats_b) - score_from_stats(name, stats_a)
    idx = _indices(len(stats_a), resamples, seed)
    deltas = np.array(
        [score_from_stats(name, stats_b[i]) - score_from_stats(name, stats_a[i]) for i in idx]
    )
    low, high = _interval95(deltas)
    extreme = np.sum(np.abs(deltas - deltas.mean()) >= abs(real))
    return {
        "difference": float(real),
        "ci_low": float(low),
        "ci_high": float(high),
        "p_value": float((extreme + 1) / (resamples + 1)),
    }


def paired_test(name: str, base: dict, other: dict, common: list) -> dict:
    """The paired bootstrap of `other` against `base` (samples by example id) on the
    examples in `common`: difference, 95% interval, p-value, and what they mean."""
    a = np.array([base[x].stats[name] for x in common], dtype=float)
    b = np.array([other[x].stats[name] for x in common], dtype=float)
    test = paired_bootstrap(name, a, b)
    better = (test["difference"] < 0) if name in LOWER_IS_BETTER else (test["difference"] > 0)
    return {**test, "significant": test["p_value"] < SIGNIFICANCE, "subject_better": better}


def evaluations_paired(name: str, base, other) -> dict:
    """paired_test of two evaluations on the examples both answered, and how many; None
    when they share none."""
    a = {s.example_id: s for s in base.samples.all()}
    b = {s.example_id: s for s in other.samples.all()}
    common = sorted(a.keys() & b.keys())
    return {**paired_test(name, a, b, common), "samples": len(common)} if common else None


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test; ties are left out by the caller."""
    if wins + losses == 0:
        return 1.0
    return float(binomtest(wins, wins + losses, 0.5).pvalue)


def bradley_terry(outcomes: list[tuple[int, int]], n_items: int) -> np.ndarray:
    """Bradley-Terry log-strengths from (winner, loser) pairs, centred at 0; a tie is passed
    as both orders by the caller. Each item also plays one virtual game against a reference
    of strength 1 and wins half of it: the prior keeps unbeaten items finite and fixes the
    scale. The posterior mode is found by Newton's method (the log-posterior is strictly
    concave; Hunter's MM iteration converges too slowly on lopsided data)."""
    wins = np.zeros((n_items, n_items))
    for winner, loser in outcomes:
        wins[winner, loser] += 1
    games = wins + wins.T
    total_wins = wins.sum(1) + 0.5
    theta = np.zeros(n_items)
    for _ in range(200):
        p = expit(theta[:, None] - theta[None, :])  # P(i beats j)
        prior = expit(theta)  # P(i beats the reference)
        gradient = total_wins - (games * p).sum(1) - prior
        weights = games * p * p.T
        information = np.diag(weights.sum(1) + prior * (1 - prior)) - weights
        step = np.linalg.solve(information, gradient)
        step *= min(1.0, 2.0 / max(np.abs(step).max(), 1e-300))  # damped on lopsided data
        theta += step
        if np.abs(step).max() < 1e-12:
            break
    return theta - theta.mean()


def bradley_terry_ci(
    outcomes: list[tuple[int, int]], n_items: int, resamples: int = 200, seed: int = SEED
) -> list[tuple[float, float]]:
    if not outcomes:
        return [(0.0, 0.0)] * n_items
    rng = np.random.default_rng(seed)
    samples = np.array(
        [
            bradley_terry(
                [outcomes[i] for i in rng.integers(0, len(outcomes), len(outcomes))], n_items
            )
            for _ in range(resamples)
        ]
    )
    low, high = _interval95(samples, axis=0)
    return list(zip(low.tolist(), high.tolist(), strict=True))


def cohen_kappa(a: list, b: list) -> float | None:
    """Agreement of two raters on the same items beyond chance; None without data."""
    if not a or len(a) != len(b):
        return None
    labels = sorted(set(a) | set(b))
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / len(a)
    expected = sum((a.count(label) / len(a)) * (b.count(label) / len(b)) for label in labels)
    return 1.0 if expected == 1 else (observed - expected) / (1 - expected)
