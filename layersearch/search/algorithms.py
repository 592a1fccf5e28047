"""Optuna's samplers and pruners by name, and the median rule for multi-objective studies."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from .space import SearchSpace, SpaceError
from .storage import StudyError

SAMPLERS = ("tpe", "random", "gp", "nsga2", "qmc", "grid")
PRUNERS = ("median", "hyperband", "none")


def make_sampler(name: str, space: SearchSpace, n_objectives: int, seed: int, n_startup: int):
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    if name == "grid":
        try:
            return optuna.samplers.GridSampler(space.grid(), seed=seed)
        except SpaceError as err:
            raise StudyError(str(err)) from None
    raise StudyError(f"unknown study.sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")


def make_pruner(name: str, n_objectives: int, n_startup: int, n_warmup: int, trainer: Mapping[str, Any]):
    if name not in PRUNERS:
        raise StudyError(f"unknown study.pruner {name!r}; choose one of: {', '.join(PRUNERS)}")
    if name == "none":
        return optuna.pruners.NopPruner()
    if n_objectives > 1:
        if name == "hyperband":
            raise StudyError("study.pruner=hyperband needs a single objective; use median (on the first) or none")
        # Optuna cannot report intermediate values of multi-objective trials: MultiObjectiveMedian decides.
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=n_startup, n_warmup_steps=n_warmup)
    steps, every = int(trainer["steps"]), int(trainer.get("eval_every") or trainer["steps"])
    return optuna.pruners.HyperbandPruner(min_resource=every, max_resource=steps)


@dataclass
class MultiObjectiveMedian:
    """Median pruning on the first objective for multi-objective studies.

    Optuna's ``trial.report`` refuses multi-objective trials, so each evaluation is kept as a user attribute
    and compared with the median of finished trials at the same step, like ``MedianPruner``.
    """

    study: optuna.Study
    metric: str
    direction: str
    n_startup: int
    n_warmup: int
    _history: dict[int, list[float]] = field(default_factory=dict)

    def refresh(self) -> None:
        self._history = {}
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            for step, value in (t.user_attrs.get("intermediate") or {}).items():
                self._history.setdefault(int(step), []).append(float(value))

    def should_prune(self, step: int, value: float) -> bool:
        finished = len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        others = self._history.get(step, [])
        if finished < self.n_startup or step <= self.n_warmup or not others or not math.isfinite(value):
            return not math.isfinite(value)
        median = statistics.median(others)
        return value > median if self.direction == "minimize" else value < median


