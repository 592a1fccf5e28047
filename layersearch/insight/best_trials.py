"""The best trials of a finished study: ranked on an objective, the Pareto front, the top table, and each
against the literature baselines beyond seed noise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial

from ..search.results import compare, front, runs_of
from .study_summary import StudySummary

__all__ = ["baseline_differences", "better_if", "pareto_front", "ranked", "top_trials"]


def better_if(direction: str) -> str:
    return "lower" if direction == "minimize" else "higher"


def ranked(trials: Sequence[FrozenTrial], index: int, direction: str) -> list[FrozenTrial]:
    """Trials best first by objective ``index``."""
    return sorted(trials, key=lambda t: t.values[index], reverse=direction == "maximize")


def pareto_front(summary: StudySummary) -> list[FrozenTrial]:
    """The best trial (one objective) or the non-dominated complete trials, best first on the primary."""
    metric_dirs = [d for _, d in summary.objectives]
    return ranked(front(summary.complete, metric_dirs), 0, metric_dirs[0])


def baseline_differences(summary: StudySummary, trial: FrozenTrial) -> list[dict[str, Any]]:
    """``trial`` minus every literature baseline of the study, per objective, called against seed noise.

    A config's value is the mean of its runs: its first run and, for a baseline run again with another seed,
    its repeats (``value_runs``/``baseline_runs`` say how many). The verdict is ``search.results.compare``:
    "better"/"worse" only beyond the study's seed noise, "within noise" otherwise.
    """
    pool = [*summary.complete, *summary.repeats]
    rows = []
    for base in summary.baselines:
        if base.number == trial.number:
            continue
        for i, (metric, direction) in enumerate(summary.objectives):
            mine, theirs = runs_of(trial, pool, i), runs_of(base, pool, i)
            value, base_value = float(np.mean(mine)), float(np.mean(theirs))
            rows.append({"baseline": base.user_attrs["baseline"], "metric": metric, "value": value,
                         "value_runs": len(mine), "baseline_value": base_value, "baseline_runs": len(theirs),
                         "difference": value - base_value, "better_if": better_if(direction),
                         "verdict": compare(mine, theirs, direction, summary.noise.get(metric))})
    return rows


def top_trials(summary: StudySummary, n: int) -> list[FrozenTrial]:
    """The ``n`` best complete trials: the Pareto front first (best primary first), then by the primary."""
    front = pareto_front(summary)
    rest = [t for t in ranked(summary.complete, 0, summary.objectives[0][1]) if t not in front]
    return (front + rest)[:n]
