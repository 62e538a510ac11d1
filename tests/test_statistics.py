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
