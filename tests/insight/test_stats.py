"""The insight statistics against hand-computed values: rank agreement, Welch's t-test, HC3 least squares, Holm."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from layersearch.insight.stats import contrast, holm, ols_hc3, rank_correlation, verdict, welch_test


def test_rank_correlation_matches_the_textbook_formulas():
    # Two adjacent swaps in five configs: sum of squared rank differences 4, so Spearman = 1 - 6*4/(5*24) = 0.8;
    # of the 10 pairs 8 are concordant and 2 discordant, so Kendall = (8 - 2)/10 = 0.6.
    short, long = [0.10, 0.20, 0.30, 0.40, 0.50], [0.21, 0.11, 0.42, 0.33, 0.55]
    rc = rank_correlation(short, long)
    assert rc.spearman == pytest.approx(0.8)
    assert rc.kendall == pytest.approx(0.6)
    assert rc.n == 5
    reversed_rc = rank_correlation(short, list(reversed(short)))
    assert (reversed_rc.spearman, reversed_rc.kendall) == (pytest.approx(-1.0), pytest.approx(-1.0))


def test_rank_correlation_handles_ties_as_scipy_does_and_is_none_when_undefined():
    short, long = [1.0, 2.0, 2.0, 3.0], [1.0, 3.0, 2.0, 4.0]
    rc = rank_correlation(short, long)
    assert rc.spearman == pytest.approx(stats.spearmanr(short, long).statistic)
    assert rc.kendall == pytest.approx(stats.kendalltau(short, long).statistic)  # tau-b
    single = rank_correlation([0.3], [0.4])
    assert (single.spearman, single.kendall, single.n) == (None, None, 1)
    flat = rank_correlation([0.3, 0.3, 0.3], [0.1, 0.2, 0.3])
    assert (flat.spearman, flat.kendall, flat.n) == (None, None, 3)
    with pytest.raises(ValueError, match="paired"):
        rank_correlation([1.0, 2.0], [1.0])


def test_welch_test_matches_a_hand_computation():
    a, b = [1.0, 2.0, 3.0], [4.0, 6.0, 8.0]  # means 2 and 6, sample variances 1 and 4
    se = math.sqrt(1 / 3 + 4 / 3)
    df = (5 / 3) ** 2 / ((1 / 3) ** 2 / 2 + (4 / 3) ** 2 / 2)  # Welch-Satterthwaite: 50/17
    assert df == pytest.approx(50 / 17)
    t = (2 - 6) / se
    result = welch_test(a, b)
    assert result.difference == pytest.approx(-4.0)
    assert result.p_value == pytest.approx(2 * stats.t.sf(abs(t), df))
    assert result.p_value == pytest.approx(0.05479, abs=1e-5)
    half = stats.t.ppf(0.975, df) * se
    assert (result.ci_low, result.ci_high) == (pytest.approx(-4 - half), pytest.approx(-4 + half))
    assert (result.n_a, result.n_b) == (3, 3)
    # p is just above 0.05 and the interval contains 0: not distinguishable, whichever direction is better.
    assert result.ci_low < 0 < result.ci_high
    assert verdict(result, lower_is_better=True) == "not distinguishable at 3 seeds"


def test_verdict_reads_the_sign_with_the_metric_direction():
    lower = welch_test([1.0, 2.0, 3.0], [7.0, 8.0, 9.0])  # t = -6/sqrt(2/3), df = 4
    assert lower.p_value == pytest.approx(2 * stats.t.sf(6 / math.sqrt(2 / 3), 4))
    assert lower.p_value == pytest.approx(0.001826, abs=1e-6)
    assert verdict(lower, lower_is_better=True) == "better beyond seed noise"  # e.g. LPIPS
    assert verdict(lower, lower_is_better=False) == "worse"  # e.g. PSNR
    assert verdict(lower, lower_is_better=True, alpha=0.001) == "not distinguishable at 3 seeds"
    uneven = welch_test([1.0, 2.0, 3.0, 2.5], [5.0, 9.0])  # N is the smaller side
    assert uneven.p_value == pytest.approx(stats.ttest_ind([1.0, 2.0, 3.0, 2.5], [5.0, 9.0], equal_var=False).pvalue)
    assert verdict(uneven, lower_is_better=False) == "not distinguishable at 2 seeds"


def test_welch_test_is_undefined_without_a_spread():
    one_seed = welch_test([1.0], [2.0, 3.0])
    assert one_seed.difference == pytest.approx(-1.5)
    assert (one_seed.p_value, one_seed.ci_low, one_seed.ci_high) == (None, None, None)
    assert verdict(one_seed, lower_is_better=True) == "not distinguishable at 1 seeds"
    flat = welch_test([1.0, 1.0], [2.0, 2.0])
    assert flat.p_value is None and flat.difference == pytest.approx(-1.0)


def test_hc3_of_two_groups_has_its_closed_form():
    # y on [1, group]: the group coefficient is the difference of means; leverage is 1/n_g, so HC3's variance
    # is s_a^2/(n_a - 1) + s_b^2/(n_b - 1) (each squared residual divided by (1 - 1/n_g)^2).
    a, b = np.array([1.0, 2.0, 4.0]), np.array([3.0, 5.0, 6.0, 10.0])
    X = np.column_stack([np.ones(7), np.r_[np.zeros(3), np.ones(4)]])
    fit = ols_hc3(np.r_[a, b], X)
    assert fit.coef[1] == pytest.approx(b.mean() - a.mean()) and fit.df == 5
    variance = a.var(ddof=1) / 2 + b.var(ddof=1) / 3
    assert fit.cov[1, 1] == pytest.approx(variance)
    c = contrast(fit, np.array([0.0, 1.0]), level=0.90)
    half = stats.t.ppf(0.95, 5) * math.sqrt(variance)
    assert (c.low, c.high) == (pytest.approx(c.estimate - half), pytest.approx(c.estimate + half))
    assert c.p_value == pytest.approx(2 * stats.t.sf(c.estimate / math.sqrt(variance), 5))


def test_hc3_leaves_out_what_the_data_cannot_separate():
    rng = np.random.default_rng(0)
    x = (rng.random(12) < 0.5).astype(float)
    X = np.column_stack([np.ones(12), x, x, rng.standard_normal(12)])  # column 2 repeats column 1
    fit = ols_hc3(rng.standard_normal(12), X)
    assert list(fit.kept) == [True, True, False, True] and fit.df == 9
    assert contrast(fit, np.array([0.0, 0.0, 1.0, 0.0])).estimate is None
    # A trial alone in its column is fitted exactly (leverage 1): that coefficient has no defined variance,
    # the others keep theirs.
    alone = np.zeros(12)
    alone[0] = 1.0
    fit = ols_hc3(rng.standard_normal(12), np.column_stack([np.ones(12), x, alone]))
    assert contrast(fit, np.array([0.0, 0.0, 1.0])).p_value is None
    assert contrast(fit, np.array([0.0, 1.0, 0.0])).p_value is not None


def test_holm_matches_the_step_down_rule():
    # sorted 0.01, 0.03, 0.04, 0.5 -> x4, x3, x2, x1 = 0.04, 0.09, 0.08 -> 0.09 (monotone), 0.5
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.2, 0.9]) == pytest.approx([0.4, 0.9]) and holm([]) == []
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
