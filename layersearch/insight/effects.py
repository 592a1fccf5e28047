"""Which layers (and which loss networks) move the primary objective, estimated jointly, with honest error rates.

Layers co-occur in sampled configs (a space picks up to ``max_layers`` of them), so comparing the trials
that used a layer with those that did not credits it with its companions' effects. Here one least-squares
regression explains the primary objective of every trial at once:

    y = b0 + sum over other networks (network dummy) + sum over candidates (b_layer * [layer used])
          + the other searched quantities (pixel weight, TV weight, criterion, centred log content/style ratio)

A layer's ``b`` is the change in the objective from using it, on its network, with everything else held
fixed, averaged over the weights the search sampled for it (log weights are left out: they exist only when
the layer is used, which would turn ``b`` into an effect at an arbitrary reference weight and cost a
parameter per layer). Intervals and p-values use HC3 standard errors and a t quantile on the residual
degrees of freedom (stats.ols_hc3), which stay valid when some configs' scores vary more than others'.

Rules a reader can rely on: no interval and no verdict for a layer with fewer than ``MIN_PER_SIDE`` trials
on either side (on its network), nor for any layer when the model has fewer than ``MIN_DF`` residual
degrees of freedom; "helps"/"hurts" only when the layer's p-value, Holm-adjusted over every layer that got
one, is below ``ALPHA``. Every row without an interval says why in ``note`` (with the numbers) and ``why``
(one of ``REASONS``, for sentences that count them). Besides the two rules, HC3 itself can leave a layer
without an interval: when its estimate depends on a trial the model fits exactly (leverage 1, e.g. the only
trial using some other layer), that trial's residual is 0 whatever its noise, so the robust variance is
undefined (stats.ols_hc3) although the residual df may be ample.

Measured by simulation (tests/insight/test_effects.py; 200 studies per case in the default suite, 2000 in
the slow test, in brackets): the 90% intervals covered the true effect in 89.5% [91.2%] of 40-trial studies
whose layer had exactly 5 trials on one side, 86.5% when those 5 trials were twice as noisy as the rest
[87.0% at three times], and 98.2% [96.7%] of 10-trial studies with 5 on each side (HC3 is conservative at
df 3). In null studies (five candidates, each used with probability 0.4, noise only) a layer was called
helpful or harmful in 4.5% [6.3%] of 40-trial studies, [3.9%] with t(3) noise, 4.5% [2.9%] with 16 trials,
[7.0%] with 100; raw 90% intervals excluding 0 would have "found" a layer in 27.5% [30.2%] of the 40-trial
ones. Rerun: `pytest -s tests/insight/test_effects.py` and, for the brackets, add `-m slow`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from .best_trials import better_if
from .importance import searched_quantities
from .stats import LinearFit, contrast, holm, ols_hc3
from .study_summary import CandidateLayer, StudySummary, intermediate, trial_arch

__all__ = ["ALPHA", "EXACT_FIT", "FEW_DF", "FEW_ON_A_SIDE", "LEVEL", "MIN_DF", "MIN_PER_SIDE", "NOT_SEPARABLE",
           "NO_SPREAD", "REASONS", "EffectTable", "LayerEffect", "NetworkEffect", "layer_effects", "network_effects",
           "step_effects", "verdict_of"]

#: Fewest trials on each side (with / without the layer, on its network) for an interval and a verdict.
MIN_PER_SIDE = 5
#: Fewest residual degrees of freedom for any interval. Not a validity limit: simulated 10-trial studies with 5
#: trials a side (2,000 each, 2026-12-07) covered the true effect in 97-99% of 90% intervals at df 3, 2 and 1,
#: also with the layer's trials three times as noisy. It is a usefulness one: the noise estimate then rests on
#: one or two residuals and the t quantile grows (2.35 at df 3, 2.92 at df 2, 6.31 at df 1), so the median
#: width doubled from df 3 to df 2 and grew 16-fold to df 1 (0.08, 0.17, 1.3 for an effect of 0.05 and noise
#: 0.01): such intervals could never support a verdict, and the table says so instead of printing them.
MIN_DF = 3
# Why a row has no interval (``LayerEffect.why``); ``note`` says it in words with the numbers.
FEW_ON_A_SIDE = "few on a side"  # fewer than MIN_PER_SIDE trials with or without it
FEW_DF = "few df"  # the joint model leaves fewer than MIN_DF residual degrees of freedom
NOT_SEPARABLE = "not separable"  # its column is a combination of other terms' (e.g. always chosen with a layer)
EXACT_FIT = "exact fit"  # its estimate depends on trials the model fits exactly: HC3 variance undefined
NO_SPREAD = "no spread"  # every residual is 0
REASONS = (FEW_ON_A_SIDE, FEW_DF, NOT_SEPARABLE, EXACT_FIT, NO_SPREAD)
LEVEL = 0.90  # the intervals (layers.csv's ci90_low, ci90_high)
ALPHA = 0.10  # family-wise error of the verdicts (Holm): a single tested layer is called iff its 90% interval excludes 0
TOO_FEW = "too few trials"


@dataclass
class LayerEffect:
    """One candidate layer's effect on the primary objective.

    ``n_with``/``n_without``: trials on the layer's network that used it / did not (trials on other networks
    say nothing about it once the network has its own term);
    ``difference``: the joint model's estimate of using the layer (with - without; None when there is none);
    ``ci_low``/``ci_high``: its 90% interval; ``median_with``/``median_without``: plain medians of the trials
    on the layer's network, descriptive only; ``p_value``/``p_adjusted``: two-sided, raw and Holm-adjusted;
    ``verdict``: ``helps``, ``hurts``, ``unclear`` or ``too few trials``; ``note``: why there is no interval,
    in words with the numbers ("only 2 trials without it (5 needed on each side)"); ``why``: which of
    ``REASONS`` that is ("" when there is an interval).
    ``top_*``: how many of the best decile used the layer, and its median weight among them.
    """

    group: str
    arch: str
    layer: str
    n_with: int
    n_without: int
    median_with: float | None
    median_without: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    better_if: str
    top_uses: int
    top_size: int
    top_weight: float | None
    p_value: float | None = None
    p_adjusted: float | None = None
    verdict: str = "unclear"
    note: str = ""
    why: str = ""

    @property
    def helps(self) -> bool | None:
        return {"helps": True, "hurts": False}.get(self.verdict)


@dataclass
class NetworkEffect:
    """One loss network against the others: its trials' mean minus the mean of the other networks' means,
    from ``y ~ network + other searched quantities`` (its layers included in what it is: the network as the
    search tried it). Same interval, test and Holm rules as the layers; verdict ``better``, ``worse``,
    ``unclear`` or ``too few trials``; ``note``/``why`` as for layers."""

    arch: str
    n: int
    n_others: int
    median: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    better_if: str
    p_value: float | None = None
    p_adjusted: float | None = None
    verdict: str = "unclear"
    note: str = ""
    why: str = ""


@dataclass
class EffectTable:
    """Effects fitted on ``n_trials`` trials with ``n_terms`` model terms (``df`` residual degrees of freedom);
    ``tested`` rows entered the Holm family. ``step``: the evaluation step the values were read at (None:
    final values of complete trials)."""

    rows: list
    n_trials: int
    n_terms: int
    df: int
    tested: int
    terms: list[str] = field(default_factory=list)
    step: int | None = None


def verdict_of(estimate: float, p_adjusted: float | None, direction: str, alpha: float = ALPHA,
               words: tuple[str, str] = ("helps", "hurts")) -> str:
    """``words[0]`` when the estimate moves the objective the better way at Holm-adjusted p < alpha, ``words[1]``
    the other way, else ``unclear``."""
    if p_adjusted is None or p_adjusted >= alpha or estimate == 0:
        return "unclear"
    return words[0] if (estimate < 0) == (direction == "minimize") else words[1]


def _covariates(trials: Sequence[FrozenTrial]) -> dict[str, np.ndarray]:
    """The searched quantities other than layers and network, as columns (only those that vary)."""
    rows = [searched_quantities(t.user_attrs["layer_config"]) for t in trials]
    out: dict[str, np.ndarray] = {}
    for name in ("pixel_weight", "tv_weight"):
        out[name] = np.array([r[name] for r in rows], dtype=float)
    levels = sorted({r["criterion"] for r in rows})
    for level in levels[1:]:
        out[f"criterion={level}"] = np.array([r["criterion"] == level for r in rows], dtype=float)
    ratio = np.array([np.nan if r["log10_content_style_ratio"] is None else r["log10_content_style_ratio"]
                      for r in rows])
    if np.isfinite(ratio).any():
        # Centred over the trials that have Gram terms and 0 elsewhere: a style layer's effect is then read
        # at the average ratio, not at an arbitrary value given to trials without Gram terms.
        out["log10_content_style_ratio"] = np.nan_to_num(ratio - np.nanmean(ratio))
    return {k: v for k, v in out.items() if np.ptp(v) > 0}


def _used(trials: Sequence[FrozenTrial], c: CandidateLayer) -> np.ndarray:
    return np.array([trial_arch(t) == c.arch and c.layer in t.user_attrs["layer_config"].get(c.key, {})
                     for t in trials], dtype=bool)


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if len(values) else None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def _side_note(n_in: int, n_out: int, min_per_side: int, words: tuple[str, str], everywhere: str) -> str:
    """Why too few trials on a side, in words: ``words`` name the two sides ("with it", "without it"),
    ``everywhere`` the trials counted ("trials on vgg16")."""
    if n_in == 0 or n_out == 0:
        return f"{'used in none' if n_in == 0 else 'used in every one'} of the {n_in + n_out} {everywhere}"
    short = [f"{_plural(n, 'trial')} {word}" for n, word in ((n_in, words[0]), (n_out, words[1])) if n < min_per_side]
    return f"only {' and '.join(short)} ({min_per_side} needed on each side)"


def _df_note(n_trials: int, n_terms: int, df: int) -> str:
    return (f"the joint model has too few residual degrees of freedom ({n_trials} trials, {n_terms} terms: "
            f"df {max(df, 0)}, {MIN_DF} needed)")


def _trials_named(trials: Sequence[FrozenTrial], index: Sequence[int]) -> str:
    numbers = [getattr(trials[i], "number", None) for i in index]
    if None in numbers:  # duck-typed trials (simulations) have no number
        return _plural(len(numbers), "trial")
    named = [f"#{n}" for n in numbers]
    return ("trial " if len(named) == 1 else "trials ") + (", ".join(named[:-1]) + " and " if len(named) > 1
                                                           else "") + named[-1]


def _exactly_fitted(X: np.ndarray, fit: LinearFit, weights: np.ndarray) -> np.ndarray:
    """The trials the fit reproduces exactly (leverage 1) that the contrast ``weights @ coef`` depends on:
    their residual is 0 whatever their noise, which is why HC3 leaves its variance undefined (same
    tolerances as stats.ols_hc3)."""
    Xk = X[:, fit.kept]
    A = np.linalg.solve(Xk.T @ Xk, Xk.T)
    leverage = np.einsum("ij,ji->i", Xk, A)
    return np.flatnonzero((leverage > 1 - 1e-9) & (np.abs(weights[fit.kept] @ A) > 1e-9))


def _undefined_note(trials: Sequence[FrozenTrial], X: np.ndarray, fit: LinearFit, weights: np.ndarray
                    ) -> tuple[str, str]:
    """Why a contrast that has an estimate got no interval: (reason, note)."""
    exact = _exactly_fitted(X, fit, weights)
    if len(exact):
        which = _trials_named(trials, exact)
        one = len(exact) == 1
        return EXACT_FIT, (f"the estimate depends on {which}, whose {'mix' if one else 'mixes'} of layers and "
                           f"settings no other trials reproduce, so the model fits {'it' if one else 'them'} "
                           f"exactly and cannot measure {'its' if one else 'their'} noise")
    return NO_SPREAD, "the model fits every trial exactly, so there is no residual spread to measure noise with"


def _inseparable_note(columns: dict[str, np.ndarray], name: str, label) -> str:
    """Why a term was dropped as collinear, naming a term used in exactly the same trials when there is one."""
    twin = next((other for other, col in columns.items() if other != name and ":" in other
                 and np.array_equal(col, columns[name])), None)
    if twin is not None:
        return f"used in exactly the same trials as {label(twin)}, so the two cannot be told apart"
    return "its use is a combination of other terms' in these trials (no trial tells them apart)"


def _apply_holm(rows: list, direction: str, words: tuple[str, str] = ("helps", "hurts"), same: bool = False) -> int:
    """Holm over the rows that have a p-value; ``same``: they all test one hypothesis (two networks, each
    against the other), so there is nothing to adjust for."""
    tested = [r for r in rows if r.p_value is not None]
    adjusted = [r.p_value for r in tested] if same else holm([r.p_value for r in tested])
    for r, p in zip(tested, adjusted, strict=True):
        r.p_adjusted = p
        r.verdict = verdict_of(r.difference, p, direction, words=words)
    return 1 if same and tested else len(tested)


def layer_effects(summary: StudySummary, trials: Sequence[FrozenTrial] | None = None,
                  values: Sequence[float] | None = None, min_per_side: int = MIN_PER_SIDE,
                  step: int | None = None) -> EffectTable:
    """The per-layer effect table, rows with an estimate first, largest effect first.

    Args:
        summary: the study; its candidates and primary objective's direction.
        trials, values: the trials and their primary values (default: complete trials, final values).
        min_per_side: fewest trials with and without a layer for an interval and a verdict.
        step: recorded in the table when ``values`` were read at an evaluation step.
    """
    trials = list(summary.complete if trials is None else trials)
    y = np.array([t.values[0] for t in trials] if values is None else values, dtype=float)
    direction = summary.objectives[0][1]
    arch_of = np.array([trial_arch(t) for t in trials])
    archs = [a for a in summary.archs if a in set(arch_of)]
    columns = {"intercept": np.ones(len(trials))}
    columns.update({f"network={a}": (arch_of == a).astype(float) for a in archs[1:]})
    candidates = [c for c in summary.candidates if c.arch in archs]
    used = {c: _used(trials, c) for c in candidates}
    columns.update({f"{c.group}:{c.arch}:{c.layer}": used[c].astype(float) for c in candidates})
    columns.update(_covariates(trials))
    names = list(columns)
    X = np.column_stack(list(columns.values()))
    fit = ols_hc3(y, X)
    on = "trials on {}" if len(archs) > 1 else "trials"
    top = np.argsort(y if direction == "minimize" else -y, kind="stable")[: max(1, math.ceil(0.1 * len(y)))]
    rows = []
    for c in candidates:
        on_net = arch_of == c.arch
        with_, without = used[c], on_net & ~used[c]
        top_weights = [trials[i].user_attrs["layer_config"][c.key][c.layer] for i in top if used[c][i]]
        row = LayerEffect(c.group, c.arch, c.layer, int(with_.sum()), int(without.sum()), _median(y[with_]),
                          _median(y[without]), None, None, None, better_if(direction), len(top_weights), len(top),
                          float(np.median(top_weights)) if top_weights else None)
        name = f"{c.group}:{c.arch}:{c.layer}"
        if min(row.n_with, row.n_without) < min_per_side:
            row.verdict, row.why = TOO_FEW, FEW_ON_A_SIDE
            row.note = _side_note(row.n_with, row.n_without, min_per_side, ("with it", "without it"),
                                  on.format(c.arch))
        elif fit.df < MIN_DF:
            row.verdict, row.why, row.note = TOO_FEW, FEW_DF, _df_note(len(y), int(fit.kept.sum()), fit.df)
        else:
            weights = np.zeros(len(names))
            weights[names.index(name)] = 1.0
            est = contrast(fit, weights, LEVEL)
            row.difference, row.ci_low, row.ci_high, row.p_value = est.estimate, est.low, est.high, est.p_value
            if est.estimate is None:
                row.why = NOT_SEPARABLE
                row.note = _inseparable_note(columns, name, lambda n: n.split(":")[-1])
            elif est.p_value is None:
                row.why, row.note = _undefined_note(trials, X, fit, weights)
        rows.append(row)
    tested = _apply_holm(rows, direction)
    rows.sort(key=lambda r: (r.difference is None, -abs(r.difference or 0.0)))
    return EffectTable(rows, len(y), int(fit.kept.sum()), fit.df, tested, names, step)


def network_effects(summary: StudySummary, min_per_side: int = MIN_PER_SIDE) -> EffectTable | None:
    """Each searched network against the others on the complete trials; None when one network was searched."""
    if len(summary.archs) < 2:
        return None
    trials = summary.complete
    y = np.array([t.values[0] for t in trials], dtype=float)
    direction = summary.objectives[0][1]
    arch_of = np.array([trial_arch(t) for t in trials])
    present = [a for a in summary.archs if (arch_of == a).any()]
    columns = {f"network={a}": (arch_of == a).astype(float) for a in present}  # one mean per network
    columns.update(_covariates(trials))
    names = list(columns)
    X = np.column_stack(list(columns.values()))
    fit = ols_hc3(y, X)
    rows = []
    for arch in summary.archs:
        mine = arch_of == arch
        row = NetworkEffect(arch, int(mine.sum()), int((~mine).sum()), _median(y[mine]), None, None, None,
                            better_if(direction))
        if min(row.n, row.n_others) < min_per_side or len(present) < 2:
            row.verdict, row.why = TOO_FEW, FEW_ON_A_SIDE
            row.note = _side_note(row.n, row.n_others, min_per_side, ("on it", "on the others"), "complete trials")
        elif fit.df < MIN_DF:
            row.verdict, row.why, row.note = TOO_FEW, FEW_DF, _df_note(len(y), int(fit.kept.sum()), fit.df)
        else:
            weights = np.array([1.0 if n == f"network={arch}" else -1.0 / (len(present) - 1)
                                if n.startswith("network=") else 0.0 for n in names])
            est = contrast(fit, weights, LEVEL)
            row.difference, row.ci_low, row.ci_high, row.p_value = est.estimate, est.low, est.high, est.p_value
            if est.estimate is None:
                row.why, row.note = NOT_SEPARABLE, "not separable from the other terms (no trial tells them apart)"
            elif est.p_value is None:
                row.why, row.note = _undefined_note(trials, X, fit, weights)
        rows.append(row)
    tested = _apply_holm(rows, direction, ("better", "worse"), same=len(present) == 2)
    return EffectTable(rows, len(y), int(fit.kept.sum()), fit.df, tested, names)


def step_effects(summary: StudySummary, share: float = 1.0, min_per_side: int = MIN_PER_SIDE
                 ) -> EffectTable | str:
    """Layer effects at the latest evaluation step that ``share`` of the complete and pruned trials reached.

    Every trial, pruned or not, reported its first evaluations, so an early step carries evidence from the
    trials pruning stopped. With ``share=1`` no trial is missing at that step; a lower share adds later steps
    but drops trials pruned before them, and those were pruned for poor values, so layers whose trials were
    pruned would then look better than they are. Returns the table, or a sentence saying why there is none.
    """
    pool = [t for t in summary.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            and "layer_config" in t.user_attrs]
    if not any(t.state == TrialState.PRUNED for t in pool):
        return "no trial was pruned, so the table above already uses every trial"
    curves = [intermediate(t) for t in pool]
    steps = sorted({s for curve in curves for s in curve}, reverse=True)
    need = math.ceil(share * len(pool) - 1e-9)
    step = next((s for s in steps if sum(s in curve for curve in curves) >= need), None)
    if step is None:
        return (f"no evaluation step was reported by {share:.0%} of the {len(pool)} complete and pruned trials "
                "(older trials may lack intermediate values)")
    chosen = [(t, curve[step]) for t, curve in zip(pool, curves, strict=True)
              if step in curve and math.isfinite(curve[step])]
    return layer_effects(summary, [t for t, _ in chosen], [v for _, v in chosen], min_per_side, step)
