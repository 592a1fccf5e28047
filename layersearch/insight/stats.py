"""The statistics the insight commands report, with their conventions fixed in one place.

`layersearch confirm`: rank agreement, a two-sample test over seeds (scipy), and the race's blocked tests
(configs compared on common seeds and validation images, seeds and images as random blocks). `layersearch report`: a
least-squares fit with HC3 heteroskedasticity-robust standard errors and t intervals for linear contrasts,
and Holm's step-down adjustment for many tests at once. Undefined results (too few values, no spread, a
term the data cannot separate) are None instead of NaN, so JSON and tables stay readable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["BlockedTest", "Comparison", "Contrast", "LinearFit", "RankCorrelation", "blocked_anova", "blocked_pair",
           "contrast", "holm", "ols_hc3", "rank_correlation",
           "verdict", "welch_test"]

BETTER = "better beyond seed noise"
WORSE = "worse"


@dataclass(frozen=True)
class RankCorrelation:
    """Agreement of two rankings of the same configs; None where undefined (fewer than 2, or all tied)."""

    spearman: float | None
    kendall: float | None
    n: int


def _defined(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def rank_correlation(short: Sequence[float], long: Sequence[float]) -> RankCorrelation:
    """Spearman's rho and Kendall's tau-b between two scores of the same configs (ties handled).

    Scores, not ranks, go in: both statistics depend only on the order, so a metric's direction does not
    matter as long as both lists are the same metric.
    """
    if len(short) != len(long):
        raise ValueError(f"rank_correlation needs paired values, got {len(short)} and {len(long)}")
    n = len(short)
    if n < 2 or len(set(short)) < 2 or len(set(long)) < 2:
        return RankCorrelation(None, None, n)
    return RankCorrelation(
        _defined(stats.spearmanr(short, long).statistic), _defined(stats.kendalltau(short, long).statistic), n
    )


@dataclass(frozen=True)
class Comparison:
    """``mean(a) - mean(b)`` with Welch's two-sided t-test and its confidence interval (None if undefined)."""

    difference: float
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    n_a: int
    n_b: int


def welch_test(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Comparison:
    """Welch's unequal-variance t-test of ``a`` against ``b`` (scipy.stats.ttest_ind, equal_var=False).

    The interval is for ``mean(a) - mean(b)`` with Welch-Satterthwaite degrees of freedom. With fewer than
    two values on a side, or no spread on either, the test is undefined: p and the interval are None.
    """
    a, b = [float(x) for x in a], [float(x) for x in b]
    if not a or not b:
        raise ValueError("welch_test needs at least one value on each side")
    difference = sum(a) / len(a) - sum(b) / len(b)
    if len(a) < 2 or len(b) < 2 or (len(set(a)) == 1 and len(set(b)) == 1):
        return Comparison(difference, None, None, None, len(a), len(b))
    result = stats.ttest_ind(a, b, equal_var=False)
    interval = result.confidence_interval(confidence)
    return Comparison(difference, _defined(interval.low), _defined(interval.high), _defined(result.pvalue),
                      len(a), len(b))


def verdict(comparison: Comparison, lower_is_better: bool, alpha: float = 0.05) -> str:
    """The plain reading of a winner-minus-baseline comparison.

    "better beyond seed noise" or "worse" when the two-sided p-value is below ``alpha`` (the sign of the
    difference, read with the metric's direction, says which); otherwise "not distinguishable at N seeds",
    N being the smaller number of seeds of the two.
    """
    p = comparison.p_value
    if p is not None and p < alpha and comparison.difference != 0:
        improved = comparison.difference < 0 if lower_is_better else comparison.difference > 0
        return BETTER if improved else WORSE
    return f"not distinguishable at {min(comparison.n_a, comparison.n_b)} seeds"


@dataclass(frozen=True)
class LinearFit:
    """``y ~ X b`` by least squares. ``kept[j]`` is False for a column the data cannot separate from the
    columns before it (collinear; its coefficient is NaN). ``cov`` is the HC3 covariance of ``coef``; rows
    and columns are NaN where it is undefined (a coefficient that leans on a trial fitted exactly)."""

    coef: np.ndarray
    cov: np.ndarray
    df: int
    kept: np.ndarray


def _independent_columns(X: np.ndarray) -> np.ndarray:
    """Greedily keep each column that is not a linear combination of the kept ones before it."""
    kept = np.zeros(X.shape[1], dtype=bool)
    for j in range(X.shape[1]):
        trial = kept.copy()
        trial[j] = True
        if np.linalg.matrix_rank(X[:, trial]) == trial.sum():
            kept = trial
    return kept


def ols_hc3(y: np.ndarray, X: np.ndarray) -> LinearFit:
    """Least squares with HC3 standard errors (MacKinnon & White 1985; Long & Ervin 2000).

    HC3 weights each squared residual by ``1 / (1 - h_ii)^2`` (``h`` the leverage). Unlike the classical
    ``s^2 (X'X)^-1`` it stays valid when the noise differs between configs (a deep layer's trials vary more
    than a pixel loss's), and it is the robust variant recommended for small samples. Intervals and tests
    use a t quantile with the residual degrees of freedom ``n - p``.

    Args:
        y: ``(n,)`` responses. X: ``(n, p)`` design, intercept included by the caller.
    """
    y, X = np.asarray(y, dtype=float), np.asarray(X, dtype=float)
    n, p = X.shape
    kept = _independent_columns(X)
    Xk = X[:, kept]
    coef, cov = np.full(p, np.nan), np.full((p, p), np.nan)
    df = n - int(kept.sum())
    if df < 1:
        return LinearFit(coef, cov, df, kept)
    A = np.linalg.solve(Xk.T @ Xk, Xk.T)  # (p_kept, n): coef = A y
    b = A @ y
    residual = y - Xk @ b
    leverage = np.einsum("ij,ji->i", Xk, A)
    exact = leverage > 1 - 1e-9  # fitted exactly: its residual says nothing about its noise
    scaled = np.where(exact, 0.0, residual / np.where(exact, 1.0, 1 - leverage))
    covk = (A * scaled**2) @ A.T
    undefined = (np.abs(A[:, exact]) > 1e-9).any(axis=1)
    covk[undefined, :] = np.nan
    covk[:, undefined] = np.nan
    coef[kept] = b
    cov[np.ix_(kept, kept)] = covk
    return LinearFit(coef, cov, df, kept)


@dataclass(frozen=True)
class Contrast:
    """A linear combination of a fit's coefficients: estimate, two-sided t interval and p-value (None when
    undefined: a term not estimated, or no residual spread)."""

    estimate: float | None
    low: float | None
    high: float | None
    p_value: float | None


def contrast(fit: LinearFit, weights: np.ndarray, level: float = 0.90) -> Contrast:
    """``weights @ coef`` with its ``level`` t interval (df = ``fit.df``) and two-sided p-value against 0."""
    weights = np.asarray(weights, dtype=float)
    used = weights != 0
    if not fit.kept[used].all():
        return Contrast(None, None, None, None)
    estimate = float(weights[used] @ fit.coef[used])
    variance = float(weights[used] @ fit.cov[np.ix_(used, used)] @ weights[used])
    if not math.isfinite(variance) or variance <= 0:
        return Contrast(estimate, None, None, None)
    se = math.sqrt(variance)
    half = float(stats.t.ppf(0.5 + level / 2, fit.df)) * se
    p = float(2 * stats.t.sf(abs(estimate) / se, fit.df))
    return Contrast(estimate, estimate - half, estimate + half, p)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979): reject where adjusted p < alpha and the chance of any
    false call among the family stays <= alpha, whatever the dependence between the tests."""
    m = len(p_values)
    adjusted, running = [0.0] * m, 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, (m - rank) * p_values[index])
        adjusted[index] = min(1.0, running)
    return adjusted


# --- blocked comparisons for `layersearch confirm`'s race -------------------------------------------------------
#
# Scores x[c, s, i]: config c, training seed s, validation image i. Seeds and images are crossed random blocks
# (every config is trained with the same seeds and scored on the same images), so the model is
#     x[c, s, i] = mu + theta_c + a_s + b_i + (ab)_si + g_cs + h_ci + e_csi
# with g_cs the config x seed interaction (one training run's luck, shared by all images it scores), h_ci the
# config x image interaction and e the rest. Block main effects cancel in every config contrast. The images of
# one run are not independent replicates of it: g_cs is common to them, so testing over (seed, image) pairs as if
# independent (Friedman, Wilcoxon on all pairs) calls seed luck a difference. The tests below use the
# mixed-model expected mean squares (configs fixed, seeds and images random):
#     E[MS_C] = s2_e + I s2_g + S s2_h + S I Q(theta),  E[MS_CS] = s2_e + I s2_g,  E[MS_CI] = s2_e + S s2_h,
#     E[MS_CSI] = s2_e,
# hence Cochran's quasi-F'' = (MS_C + MS_CSI) / (MS_CS + MS_CI) with Satterthwaite degrees of freedom on both
# sides (Satterthwaite 1946; Clark 1973; Winer, Brown & Michels 1991, ch. 5). With one image per run (a training that reports means only) it is the exact repeated-measures
# F, MS_C / MS_CS on (C-1, (C-1)(S-1)) degrees of freedom; with two configs and one image, the paired t on the per-seed differences.


@dataclass(frozen=True)
class BlockedTest:
    """A blocked test's result: statistic, degrees of freedom and p-value (p is None where undefined)."""

    statistic: float | None
    df: tuple[float, float] | None
    p_value: float | None
    seeds: int
    images: int

    @property
    def blocks(self) -> int:
        """The (seed, image) blocks the test rests on."""
        return self.seeds * self.images


def _satterthwaite(terms: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """A sum of mean squares ``[(MS, df)]`` and its Satterthwaite degrees of freedom."""
    total = sum(m for m, _ in terms)
    spread = sum(m * m / df for m, df in terms)
    return total, (total * total / spread if spread > 0 else float(sum(df for _, df in terms)))


def blocked_anova(x: np.ndarray) -> BlockedTest:
    """Do the configs differ, beyond seed and image noise? ``x``: (configs, seeds, images), complete.

    The quasi-F above; needs at least 2 configs and 2 seeds (a run's luck is estimated across seeds).
    """
    x = np.asarray(x, dtype=np.float64)
    n_c, n_s, n_i = x.shape
    if n_c < 2 or n_s < 2:
        return BlockedTest(None, None, None, n_s, n_i)
    if np.array_equal(x.min(axis=0), x.max(axis=0)):
        # The same score for every config in every block (a config raced against itself): no difference, and the
        # mean squares below would be rounding noise whose ratio means nothing.
        return BlockedTest(0.0, None, 1.0, n_s, n_i)
    m = x.mean()
    m_c, m_s, m_i = x.mean(axis=(1, 2)), x.mean(axis=(0, 2)), x.mean(axis=(0, 1))
    m_cs, m_ci = x.mean(axis=2), x.mean(axis=1)
    ms_c = n_s * n_i * ((m_c - m) ** 2).sum() / (n_c - 1)
    df_cs = (n_c - 1) * (n_s - 1)
    ms_cs = n_i * ((m_cs - m_c[:, None] - m_s[None, :] + m) ** 2).sum() / df_cs
    if n_i == 1:
        error, df = ms_cs, float(df_cs)
    else:
        m_si = x.mean(axis=0)
        df_ci, df_e = (n_c - 1) * (n_i - 1), (n_c - 1) * (n_s - 1) * (n_i - 1)
        ms_ci = n_s * ((m_ci - m_c[:, None] - m_i[None, :] + m) ** 2).sum() / df_ci
        residual = (x - m_cs[:, :, None] - m_ci[:, None, :] - m_si[None, :, :] + m_c[:, None, None]
                    + m_s[None, :, None] + m_i[None, None, :] - m)
        ms_e = (residual ** 2).sum() / df_e
        # Cochran's F'' = (MS_C + MS_CSI) / (MS_CS + MS_CI): both sides have the same expectation when the
        # configs are equal and neither can go negative (MS_C / (MS_CS + MS_CI - MS_CSI) can).
        effect, df_effect = _satterthwaite([(ms_c, n_c - 1), (ms_e, df_e)])
        # Simulated (tests/insight/test_race.py): close to its level from 5 seeds, about 6% at a 5% level with
        # 2-3 seeds; the race splits alpha over its looks, which more than covers that (its measured error is lower).
        error, df = _satterthwaite([(ms_cs, df_cs), (ms_ci, df_ci)])
        return _f_test(effect, df_effect, error, df, n_s, n_i)
    return _f_test(ms_c, n_c - 1, error, df, n_s, n_i)


def _f_test(effect: float, df_effect: float, error: float, df_error: float, n_s: int, n_i: int) -> BlockedTest:
    if error <= 0:
        # No noise at all: configs either tie exactly or differ without doubt.
        return BlockedTest(None, None, 1.0 if effect == 0 else 0.0, n_s, n_i)
    f = effect / error
    p = float(stats.f.sf(f, df_effect, df_error))
    return BlockedTest(float(f), (float(df_effect), float(df_error)), p, n_s, n_i)


def blocked_pair(a: np.ndarray, b: np.ndarray) -> tuple[float, BlockedTest]:
    """``mean(a - b)`` over (seed, image) blocks and its two-sided p; ``a``, ``b``: (seeds, images), paired.

    The two-config case of `blocked_anova` (t squared = F): the error term is the seed-to-seed and
    image-to-image spread of the differences, so one lucky seed is not read as a difference.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    test = blocked_anova(np.stack([a, b]))
    return float((a - b).mean()), test
