import numpy as np
import pytest

from evaluation import statistics


def test_wilson_interval_matches_hand_computation():
    # 8 of 10, z=1.96: centre (0.8 + 0.19208)/1.38415 = 0.71682, half 0.22642
    low, high = statistics.wilson(8, 10)
    assert low == pytest.approx(0.49016, abs=1e-4) and high == pytest.approx(0.94333, abs=1e-4)
    assert statistics.wilson(0, 0) == (0.0, 1.0)
    low, high = statistics.wilson(0, 20)
    assert low == 0.0 and high == pytest.approx(0.16113, abs=1e-4)


def test_sign_test_matches_the_binomial():
    # P(X<=2 or X>=8 | n=10, p=.5) = 2 * (1 + 10 + 45) / 1024 = 0.109375
    assert statistics.sign_test(8, 2) == pytest.approx(0.109375, abs=1e-12)
    assert statistics.sign_test(10, 0) == pytest.approx(2 / 1024, abs=1e-12)
    assert statistics.sign_test(0, 0) == 1.0


def test_bootstrap_interval_of_a_mean_has_the_known_width():
    rng = np.random.default_rng(0)
    stats = rng.integers(0, 2, size=(4000, 1)).astype(float)
    low, high = statistics.bootstrap_ci("exact_match", stats)
    mean = stats.mean()
    half = 1.96 * np.sqrt(mean * (1 - mean) / len(stats))  # normal approximation
    assert low < mean < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)


def test_bootstrap_of_constant_scores_has_no_width():
    stats = np.ones((50, 1))
    assert statistics.bootstrap_ci("exact_match", stats) == (1.0, 1.0)


def test_paired_bootstrap_finds_a_real_difference_and_not_a_fake_one():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2, size=(300, 1)).astype(float)
    better = np.where(rng.random((300, 1)) < 0.3, 1.0, a)
    result = statistics.paired_bootstrap("exact_match", a, better)
    assert result["difference"] > 0 and result["ci_low"] > 0 and result["p_value"] < 0.01
    same = statistics.paired_bootstrap("exact_match", a, a.copy())
    assert same["difference"] == 0 and same["p_value"] == 1.0


def test_bradley_terry_orders_by_strength():
    outcomes = [(0, 1)] * 8 + [(1, 0)] * 2 + [(1, 2)] * 8 + [(2, 1)] * 2 + [(0, 2)] * 9 + [(2, 0)]
    scores = statistics.bradley_terry(outcomes, 3)
    assert scores[0] > scores[1] > scores[2] and abs(scores.mean()) < 1e-9
    intervals = statistics.bradley_terry_ci(outcomes, 3)
    assert intervals[0][0] <= scores[0] <= intervals[0][1]


def test_cohen_kappa_against_a_textbook_case():
    # 50 items: both yes 20, both no 15, a yes/b no 5, a no/b yes 10 -> kappa 0.4
    a = ["y"] * 20 + ["n"] * 15 + ["y"] * 5 + ["n"] * 10
    b = ["y"] * 20 + ["n"] * 15 + ["n"] * 5 + ["y"] * 10
    assert statistics.cohen_kappa(a, b) == pytest.approx(0.4, abs=1e-12)
    assert statistics.cohen_kappa([], []) is None


def test_bradley_terry_two_items_solves_the_map_equation_by_hand():
    """Two items, A beating B 7 times and losing 3: with the half-win prior the strengths
    satisfy 7.5 = 10 s/(s + 1/s) + s/(s + 1) (geometric mean 1, so B = 1/s); solve it
    independently and compare the log-strengths."""
    from scipy.optimize import brentq

    def equation(s):
        return 10 * s / (s + 1 / s) + s / (s + 1) - 7.5

    s = brentq(equation, 1e-6, 1e6)
    scores = statistics.bradley_terry([(0, 1)] * 7 + [(1, 0)] * 3, 2)
    assert scores[0] == pytest.approx(np.log(s), abs=1e-9)
    assert scores[1] == pytest.approx(-np.log(s), abs=1e-9)


def test_bradley_terry_symmetric_cycle_gives_equal_strengths():
    cycle = [(0, 1), (1, 2), (2, 0)] * 4
    assert np.allclose(statistics.bradley_terry(cycle, 3), 0.0, atol=1e-12)


def test_bradley_terry_is_the_posterior_mode_found_independently():
    """The estimate equals the mode of the same model (each item one virtual game, won
    half, against a reference of strength 1) found by a generic optimiser."""
    from scipy.optimize import minimize

    outcomes = [(0, 1)] * 5 + [(1, 0)] * 2 + [(1, 2)] * 4 + [(2, 1)] * 3 + [(0, 2)] * 6
    wins = np.zeros((3, 3))
    for w, loser in outcomes:
        wins[w, loser] += 1

    def negative_log_posterior(logs):
        s = np.exp(logs)
        games = np.log(s[:, None] / (s[:, None] + s[None, :]))
        prior = 0.5 * np.log(s / (s + 1)) + 0.5 * np.log(1 / (s + 1))
        return -(wins * games).sum() - prior.sum()

    mode = minimize(negative_log_posterior, np.zeros(3), method="BFGS", tol=1e-12).x
    scores = statistics.bradley_terry(outcomes, 3)
    assert np.allclose(scores, mode - mode.mean(), atol=1e-6)


def test_bradley_terry_converges_on_lopsided_data():
    """Every game won by the stronger item: the prior alone keeps strengths finite, and the
    estimate must be the mode, symmetric around the middle item."""
    scores = statistics.bradley_terry([(0, 1)] * 40 + [(1, 2)] * 40 + [(0, 2)] * 40, 3)
    assert scores[1] == pytest.approx(0.0, abs=1e-6)
    assert scores[0] == pytest.approx(-scores[2], abs=1e-6) and scores[0] > 4


# Each test below stands for a class of slips a mutation run left unguarded: the interval's
# percentiles, the metric a resample is scored with, the edge cases of tiny inputs, the seed.


def _bleu_stats(pairs):
    from sacrebleu.metrics import BLEU

    hyps, refs = zip(*pairs, strict=True)
    return np.array(BLEU()._extract_corpus_statistics(list(hyps), [list(refs)]), dtype=float)


BLEU_PAIRS = [
    ("the cat sat on the mat", "the cat sat on the mat"),
    ("a dog ran in the park today", "the dog ran in the park"),
    ("hello there my old friend", "hello my dear old friend"),
    ("it is raining again in town", "it rains in the town again"),
    ("we will meet at noon", "we meet at noon tomorrow"),
    ("the quick brown fox jumps", "a quick brown fox jumped"),
] * 5


def test_the_interval_is_the_2_5th_to_97_5th_percentile():
    """Every bootstrap here shares one percentile interval; 0..1000 has known percentiles."""
    low, high = statistics._interval95(np.arange(1001.0))
    assert (low, high) == (25.0, 975.0)
    rows = statistics._interval95(np.stack([np.arange(1001.0), -np.arange(1001.0)], 1), axis=0)
    assert rows.tolist() == [[25.0, -975.0], [975.0, -25.0]]


def test_bootstrap_of_a_continuous_mean_matches_normal_theory_at_each_end():
    """Each bound, not just the width: the bootstrap distribution of a mean of 400 values is
    nearly normal, so the bounds are mean -/+ 1.96 s/sqrt(n), within the Monte Carlo error of
    20,000 resamples (about 0.02 standard errors; a 93 % interval would be 0.15 off)."""
    values = np.random.default_rng(3).normal(10.0, 2.0, size=(400, 1))
    se = values.std() / np.sqrt(len(values))
    low, high = statistics.bootstrap_ci("exact_match", values, resamples=20_000)
    assert (values.mean() - low) / se == pytest.approx(1.96, abs=0.08)
    assert (high - values.mean()) / se == pytest.approx(1.96, abs=0.08)


def test_bootstrap_resamples_the_corpus_metric_not_the_mean_of_its_statistics():
    stats = _bleu_stats(BLEU_PAIRS)
    corpus = statistics.score_from_stats("bleu", stats)
    assert 10 < corpus < 90  # on BLEU's 0-100 scale, unlike any mean of n-gram counts
    low, high = statistics.bootstrap_ci("bleu", stats)
    assert low < corpus < high and high - low < 40


def test_bootstrap_of_tiny_inputs():
    # No sample: no score. One sample: its own score, with no width.
    assert all(np.isnan(statistics.bootstrap_ci("exact_match", np.empty((0, 1)))))
    assert all(np.isnan(statistics.bootstrap_ci("bleu", np.empty((0, 10)))))
    one = _bleu_stats(BLEU_PAIRS[1:2])
    bleu = statistics.score_from_stats("bleu", one)
    assert 0 < bleu < 100 and statistics.bootstrap_ci("bleu", one) == (bleu, bleu)
    # Two different samples are already resampled: the interval has width.
    low, high = statistics.bootstrap_ci("exact_match", np.array([[0.0], [1.0]]))
    assert (low, high) == (0.0, 1.0)


def test_every_sample_can_be_drawn_including_the_first():
    """Only the first of three samples is right: a resampler that never drew index 0 would
    give an interval of (0, 0)."""
    low, high = statistics.bootstrap_ci("exact_match", np.array([[1.0], [0.0], [0.0]]))
    assert low == 0.0 and high == 1.0


def test_the_bootstraps_are_reproducible():
    values = np.random.default_rng(4).normal(size=(50, 1))
    assert statistics.bootstrap_ci("exact_match", values) == statistics.bootstrap_ci(
        "exact_match", values
    )
    outcomes = [(0, 1)] * 6 + [(1, 0)] * 4 + [(1, 2)] * 5 + [(2, 1)] * 3
    assert statistics.bradley_terry_ci(outcomes, 3) == statistics.bradley_terry_ci(outcomes, 3)
    b = values + np.random.default_rng(5).normal(0.3, 1.0, size=(50, 1))
    assert statistics.paired_bootstrap("exact_match", values, b) == statistics.paired_bootstrap(
        "exact_match", values, b
    )


def test_paired_bootstrap_of_a_corpus_metric_brackets_its_difference():
    stats_a = _bleu_stats(BLEU_PAIRS)
    better = [(ref, ref) for _, ref in BLEU_PAIRS[:6]] + BLEU_PAIRS[6:]
    stats_b = _bleu_stats(better)
    expected = statistics.score_from_stats("bleu", stats_b) - statistics.score_from_stats(
        "bleu", stats_a
    )
    result = statistics.paired_bootstrap("bleu", stats_a, stats_b)
    assert result["difference"] == pytest.approx(expected, abs=1e-9) and expected > 5
    assert result["ci_low"] < result["difference"] < result["ci_high"]
    assert result["ci_high"] - result["ci_low"] < 2 * expected
    assert set(result) == {"difference", "ci_low", "ci_high", "p_value"}


def test_paired_bootstrap_refuses_samples_that_do_not_line_up():
    with pytest.raises(ValueError, match="^paired samples must line up$"):
        statistics.paired_bootstrap("exact_match", np.ones((3, 1)), np.ones((4, 1)))


def test_bradley_terry_interval_edge_cases():
    assert statistics.bradley_terry_ci([], 3) == [(0.0, 0.0)] * 3
    # One game: every resample is that game, so each interval is the point estimate.
    scores = statistics.bradley_terry([(0, 1)], 2)
    intervals = statistics.bradley_terry_ci([(0, 1)], 2)
    assert np.allclose(intervals, [[scores[0]] * 2, [scores[1]] * 2], atol=1e-12)


def test_cohen_kappa_when_both_raters_always_give_one_label():
    """Chance agreement is 1, so kappa is defined as full agreement, not a division by 0."""
    assert statistics.cohen_kappa(["a", "a", "a"], ["a", "a", "a"]) == 1.0
    assert statistics.cohen_kappa(["a", "b"], ["a"]) is None
