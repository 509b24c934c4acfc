"""Paired statistics on hand-made differences with known answers."""
import numpy as np
import pytest

from nnunet_ssl.benchmark.statistics import (Verdict, against_noise_floor, compare, folds_to_resolve,
                                             hierarchical_bootstrap_ci, plateau_length, pooled_mean, retraining_band,
                                             retraining_spread, verdict, wilcoxon_p)


def test_constant_differences_give_a_point_interval():
    folds = [np.full(5, 0.1), np.full(7, 0.1), np.full(3, 0.1)]
    assert hierarchical_bootstrap_ci(folds, samples=500) == pytest.approx((0.1, 0.1))
    assert verdict((0.1, 0.1)) == Verdict("better", folds=1, folds_needed=1)


def test_one_fold_two_cases_has_the_binomial_interval():
    # resampling {0, 1} twice: mean 0, 0.5, 1 with probability 1/4, 1/2, 1/4 -> the 95% interval is [0, 1]
    assert hierarchical_bootstrap_ci([np.array([0.0, 1.0])], samples=4000) == pytest.approx((0.0, 1.0))


def test_folds_are_resampled_not_only_cases():
    # within-fold spread is 0, so only fold resampling can widen the interval: folds at -0.2 and +0.2
    low, high = hierarchical_bootstrap_ci([np.full(50, -0.2), np.full(50, 0.2)], samples=4000)
    assert low == pytest.approx(-0.2) and high == pytest.approx(0.2)
    assert verdict((low, high)).direction == "none"
    assert verdict((-0.3, -0.01)).direction == "worse"


def test_pooled_mean_weighs_folds_equally():
    assert pooled_mean([np.array([1.0]), np.array([0.0, 0.0, 0.0])]) == pytest.approx(0.5)


def test_wilcoxon_exact_p_values():
    assert wilcoxon_p(np.array([0.1, 0.2, 0.3, 0.4, 0.5])) == pytest.approx(2 / 32)  # all 5 ranks positive
    # W- = 2 + 4 = 6; 14 of the 64 sign patterns of ranks 1..6 give W <= 6, two-sided: 28 / 64
    assert wilcoxon_p(np.array([0.1, -0.2, 0.3, -0.4, 0.5, 0.6])) == pytest.approx(28 / 64)
    assert np.isnan(wilcoxon_p(np.zeros(4)))


def test_compare_reports_everything_a_table_needs():
    result = compare([np.array([0.1, 0.3]), np.array([0.2, 0.2])])
    assert result["mean"] == pytest.approx(0.2) and result["cases"] == 4 and result["cases_better"] == 4
    assert result["folds"] == 2 and result["verdict"] == Verdict("better", 2, 1)
    assert 0.1 <= result["ci_low"] <= result["ci_high"] <= 0.3


def test_plateau_is_the_shortest_length_whose_doubling_adds_little():
    curve = {500: 0.30, 1000: 0.50, 2000: 0.70, 4000: 0.705, 8000: 0.70}
    assert plateau_length(curve) == 2000
    assert plateau_length({500: 0.3, 1000: 0.5}) is None  # still rising at every measured doubling
    assert plateau_length({500: 0.3, 2000: 0.3}) is None  # no doubling measured


def test_too_few_folds_give_an_interval_but_no_verdict():
    one_fold = [np.full(20, 0.2) + np.linspace(-0.01, 0.01, 20)]
    result = compare(one_fold, min_folds=3)
    assert result["ci_low"] > 0 and result["verdict"] == Verdict("better", folds=1, folds_needed=3)
    assert not result["verdict"].enough_folds and not result["verdict"].decided
    assert compare(one_fold * 3, min_folds=3)["verdict"].decided
    assert compare(one_fold)["verdict"].decided  # the demo's one-run report: cases only, said in its caveat


def test_retraining_band_is_t_times_the_floor_spread_over_root_folds():
    # s = 0.03 (mean square of +-0.03), t(0.975, df 3) = 3.182446, 3 folds: 3.182446 * 0.03 / sqrt(3)
    assert retraining_band([0.03, -0.03, 0.03], n_folds=3) == pytest.approx(0.0551216, abs=1e-6)
    # the same spread over more folds of the arm narrows it; more floor folds lower t (df 5: 2.570582)
    assert retraining_band([0.03, -0.03, 0.03], n_folds=12) == pytest.approx(0.0275608, abs=1e-6)
    assert retraining_band([0.03] * 5, n_folds=3) == pytest.approx(2.570582 * 0.03 / np.sqrt(3), abs=1e-6)


def test_folds_to_resolve_a_difference_clear_the_band():
    floor = [0.03, -0.03, 0.03]
    assert retraining_spread(floor) == pytest.approx(0.03)
    # t * s = 0.0954734: 0.05 needs more than 1.909^2 = 3.65 folds, 0.01 more than 9.547^2 = 91.15
    assert folds_to_resolve(floor, 0.05) == 4 and folds_to_resolve(floor, 0.01) == 92
    assert retraining_band(floor, 4) < 0.05 < retraining_band(floor, 3)


def test_a_verdict_within_the_noise_floor_says_so():
    assert against_noise_floor(Verdict("better", 3, 3), 0.06, 0.055) == Verdict("better", 3, 3, 0.055, True)
    assert against_noise_floor(Verdict("worse", 3, 3), -0.02, 0.055) == Verdict("worse", 3, 3, 0.055, False)
    assert against_noise_floor(Verdict("none", 3, 3), 0.2, 0.055) == Verdict("none", 3, 3)  # nothing to weigh
    assert against_noise_floor(Verdict("better", 1, 3), 0.2, 0.0) == Verdict("better", 1, 3)  # no verdict yet


def test_a_finding_is_a_verdict_beyond_the_noise_floor_or_without_one():
    assert against_noise_floor(Verdict("better", 3, 3), 0.06, 0.055).finding == "better"
    assert against_noise_floor(Verdict("worse", 3, 3), -0.06, 0.055).finding == "worse"
    assert against_noise_floor(Verdict("worse", 3, 3), -0.02, 0.055).finding == "none"
    assert Verdict("worse", 3, 3).finding == "worse"  # no noise floor measured: the interval alone
    assert Verdict("none", 3, 3).finding == "none"
    assert Verdict("better", 1, 3).finding == "none"  # too few folds
