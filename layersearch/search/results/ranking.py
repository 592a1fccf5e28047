"""Which trials are the study's answer: first runs only (not the baselines' seed repeats), best or Pareto.

One place for the rule, used by the sweep's summary, export, confirm and the report.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from .noise import is_repeat

__all__ = ["dominates", "first_runs", "front"]


def first_runs(study: optuna.Study) -> list[FrozenTrial]:
    """The study's trials without the baselines' seed repeats: one trial per sampled config."""
    return [t for t in study.get_trials(deepcopy=False) if not is_repeat(t)]


def dominates(a: FrozenTrial, b: FrozenTrial, directions: list[str]) -> bool:
    """``a`` is at least as good as ``b`` on every objective and better on one."""
    sign = [1 if d == "minimize" else -1 for d in directions]
    pairs = [(s * x, s * y) for s, x, y in zip(sign, a.values, b.values, strict=True)]
    return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)


def front(trials: list[FrozenTrial], directions: list[str]) -> list[FrozenTrial]:
    """The best COMPLETE trial (one objective) or the non-dominated ones, in trial order.

    Computed here rather than by Optuna's ``best_trials`` so that the baselines' seed repeats, which are
    not configs of their own, can be left out.
    """
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    if not complete:
        return []
    if len(directions) == 1:
        pick = min if directions[0] == "minimize" else max
        return [pick(complete, key=lambda t: t.values[0])]  # trials come in order: a tie goes to the earlier
    return [t for t in complete if not any(dominates(o, t, directions) for o in complete)]
