"""The two statistics `layersearch confirm` reports: rank agreement and a two-sample test over seeds.

Both come from scipy (installed with scikit-image); this module only fixes the conventions (which
correlation, which test, which interval, what counts as "beyond seed noise") and turns undefined results
(too few values, no spread) into None instead of NaN, so JSON and tables stay readable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

__all__ = ["Comparison", "RankCorrelation", "rank_correlation", "verdict", "welch_test"]

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
