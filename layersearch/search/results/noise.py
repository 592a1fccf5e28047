"""Seed noise of a study: how much a config's score moves when only the trainer seed changes.

The sweep runs each literature baseline a second time with another trainer seed. A repeat carries the
user attributes ``baseline`` (as its first run), ``seed`` (its trainer seed) and ``repeat_of`` (the first
run's trial number); it is not counted in ``study.n_trials`` and is not an extra config: layer effects,
importances, top tables and Pareto fronts use first runs only (``is_repeat`` tells them apart). Here the
repeats give a pooled within-config standard deviation per objective, and ``compare`` calls a difference
"better" or "worse" only when it exceeds that noise.

Pure functions on Optuna FrozenTrials, so the sweep's console summary and the report share them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState
from scipy import stats

__all__ = ["ALPHA", "NO_ESTIMATE", "NoiseFloor", "compare", "describe", "is_repeat", "noise_floor", "runs_of",
           "seed_groups", "threshold"]

#: Two-sided level of each comparison: a config that is as good as the baseline is called better or worse
#: in at most 5% of comparisons (checked by simulation in tests/insight/test_noise.py).
ALPHA = 0.05
NO_ESTIMATE = "no noise estimate (study.baseline_seeds=1)"


@dataclass(frozen=True)
class NoiseFloor:
    """Seed noise of one objective, pooled over the configs that were run with several seeds.

    ``sd``: pooled within-config standard deviation, ``sqrt(sum of squared deviations from each config's
    mean / df)`` (None when no config has two usable runs); ``df``: its degrees of freedom, the sum over
    configs of runs - 1 (one per repeated baseline with two seeds); ``n_configs``, ``n_runs``: what it
    was pooled from.
    """

    metric: str
    sd: float | None
    df: int
    n_configs: int
    n_runs: int


def is_repeat(trial: FrozenTrial) -> bool:
    """A rerun of an earlier trial's config with another seed (user attr ``repeat_of``), not a new config."""
    return trial.user_attrs.get("repeat_of") is not None


def seed_groups(trials: Sequence[FrozenTrial]) -> list[list[FrozenTrial]]:
    """Each repeated config's COMPLETE runs, first run first, for configs with at least two usable runs.

    A run whose ``seed`` equals an earlier run's in the group is left out: with a deterministic trainer it
    repeats the same numbers and would make the noise look like zero. Trials without a ``seed`` attribute
    (older studies) are taken as they are.
    """
    complete = {t.number: t for t in trials if t.state == TrialState.COMPLETE and t.values}
    groups: dict[int, list[FrozenTrial]] = {}
    for t in sorted(complete.values(), key=lambda t: t.number):
        first = t.user_attrs.get("repeat_of")
        if first is None:
            continue
        if int(first) in complete:
            groups.setdefault(int(first), [complete[int(first)]]).append(t)
    out = []
    for runs in groups.values():
        seen, usable = set(), []
        for run in runs:
            seed = run.user_attrs.get("seed")
            if seed is not None and seed in seen:
                continue
            seen.add(seed)
            usable.append(run)
        if len(usable) >= 2:
            out.append(usable)
    return out


def noise_floor(trials: Sequence[FrozenTrial], objectives: Sequence[str | tuple[str, str]]
                ) -> dict[str, NoiseFloor]:
    """``{metric: NoiseFloor}`` for the objectives in study order (``trial.values[i]`` is ``objectives[i]``;
    metric names, or ``(metric, direction)`` pairs as the sweep keeps them).

    The estimate is the classical pooled variance of one-way ANOVA's within-group term: for two seeds per
    config, ``sd^2 = sum(d^2) / (2 n)`` over the n differences d between a config's two runs, with n degrees
    of freedom. It assumes the seed noise is about the same for every config; it is measured on the
    baselines, so a config whose training is less stable than theirs has more noise than this says.
    """
    groups = seed_groups(trials)
    out = {}
    for index, objective in enumerate(objectives):
        metric = objective if isinstance(objective, str) else objective[0]
        squares, df, runs, configs = 0.0, 0, 0, 0
        for group in groups:
            values = [t.values[index] for t in group if math.isfinite(t.values[index])]
            if len(values) < 2:
                continue
            mean = sum(values) / len(values)
            squares += sum((v - mean) ** 2 for v in values)
            df, runs, configs = df + len(values) - 1, runs + len(values), configs + 1
        out[metric] = NoiseFloor(metric, math.sqrt(squares / df) if df else None, df, configs, runs)
    return out


def _values(x: float | Sequence[float]) -> list[float]:
    return [float(x)] if isinstance(x, (int, float)) else [float(v) for v in x]


def threshold(noise: NoiseFloor | None, n_a: int = 1, n_b: int = 1, alpha: float = ALPHA) -> float | None:
    """The smallest |difference| between the means of ``n_a`` and ``n_b`` runs that ``compare`` calls.

    ``t(1 - alpha/2, df) * sd * sqrt(1/n_a + 1/n_b)``: two single runs differ by seed noise alone with
    standard deviation ``sqrt(2) * sd``, and ``sd`` is itself estimated from ``df`` degrees of freedom, hence
    the t quantile (12.7 with one repeated baseline at 5%, 4.3 with two, 2.8 with four). None without an
    estimate.
    """
    if noise is None or noise.sd is None or noise.df < 1:
        return None
    return float(stats.t.ppf(1 - alpha / 2, noise.df)) * noise.sd * math.sqrt(1 / n_a + 1 / n_b)


def compare(a: float | Sequence[float], b: float | Sequence[float], direction: str,
            noise: NoiseFloor | None, alpha: float = ALPHA) -> str:
    """``"better"``, ``"worse"`` (``a`` against ``b``) or ``"within noise"``; ``NO_ESTIMATE`` without repeats.

    ``a`` and ``b`` are one config's run or runs (their means are compared). The call is a two-sided t test
    at ``alpha`` of "same expected score" using the study's seed noise: |mean(a) - mean(b)| must exceed
    ``threshold``. When ``b``'s runs are the ones the noise was measured on, their mean is still independent
    of their spread (normal theory), so the level holds exactly (4000 simulated studies: 4.7% to 5.4% false
    calls at df 1, 2, 4; tests/insight/test_noise.py). Comparing with only ``b``'s first run is correlated
    with the spread and calls less often than ``alpha`` (measured 4.0% to 4.4%): safe, slightly weaker.

    Args:
        direction: ``"minimize"`` or ``"maximize"``, the objective's direction.
    """
    limit = threshold(noise, len(_values(a)), len(_values(b)), alpha)
    if limit is None:
        return NO_ESTIMATE
    diff = sum(_values(a)) / len(_values(a)) - sum(_values(b)) / len(_values(b))
    if abs(diff) <= limit:
        return "within noise"
    return "better" if (diff < 0) == (direction == "minimize") else "worse"


def runs_of(trial: FrozenTrial, trials: Sequence[FrozenTrial], index: int) -> list[float]:
    """Objective ``index`` of ``trial`` and of its usable repeats (``seed_groups``), first run first."""
    group = next((g for g in seed_groups(trials) if g[0].number == trial.number), [trial])
    return [t.values[index] for t in group]


def describe(noise: Mapping[str, NoiseFloor]) -> str:
    """One line for a console or a report: each objective's seed SD with its df, or why there is none."""
    if not any(n.sd is not None for n in noise.values()):
        return NO_ESTIMATE
    return "; ".join(f"{m}: seed SD {n.sd:.3g} (df {n.df}: {n.n_runs} runs of {n.n_configs} "
                     f"config{'s' * (n.n_configs != 1)})" if n.sd is not None else f"{m}: no estimate"
                     for m, n in noise.items())
