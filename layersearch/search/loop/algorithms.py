"""Optuna's samplers and pruners by name, and the median rule for multi-objective studies."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from ..storage import StudyError
from .space import SearchSpace, SpaceError

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


def make_pruner(name: str, n_objectives: int, n_startup: int, n_warmup: int, steps: int, eval_every: int | None):
    """The pruner ``study.pruner`` names; hyperband's resources are the trial's ``steps`` and ``eval_every``."""
    if name not in PRUNERS:
        raise StudyError(f"unknown study.pruner {name!r}; choose one of: {', '.join(PRUNERS)}")
    if name == "none":
        return optuna.pruners.NopPruner()
    if n_objectives > 1:
        if name == "median":  # fail on bad arguments before any trial runs, as Optuna's pruner does
            MultiObjectiveMedian(None, "", "minimize", n_startup, n_warmup)  # type: ignore[arg-type]
        if name == "hyperband":
            raise StudyError("study.pruner=hyperband needs a single objective; use median (on the first) or none")
        # Optuna cannot report intermediate values of multi-objective trials: MultiObjectiveMedian decides.
        return optuna.pruners.NopPruner()
    if name == "median":
        try:
            return optuna.pruners.MedianPruner(n_startup_trials=n_startup, n_warmup_steps=n_warmup)
        except ValueError as err:  # Optuna's own argument checks
            raise StudyError(f"study.pruner=median: {err}") from None
    return optuna.pruners.HyperbandPruner(min_resource=eval_every or steps, max_resource=steps)


@dataclass
class MultiObjectiveMedian:
    """Optuna's ``MedianPruner`` rule on the first objective, for multi-objective studies.

    Optuna's ``trial.report`` refuses multi-objective trials, so each trial keeps its evaluations in the user
    attribute ``intermediate`` (``{"<step>": value}``) and this class applies ``MedianPruner``'s rule
    (``optuna/pruners/_percentile.py``) to them, decision for decision:

    - no pruning before ``n_startup`` trials have COMPLETED (pruned ones do not count), nor while
      ``step < n_warmup``, nor off the ``interval_steps`` grid counted from ``n_warmup``;
    - the trial's BEST value so far is compared with the median of the values that COMPLETED trials
      reported at the same step (pruned trials are not in the history); it is pruned when worse;
    - fewer than ``n_min_trials`` completed values at that step: no pruning; a trial whose values are all
      NaN is pruned. Arguments are validated as Optuna's pruners validate them.

    The one difference: the arguments raise StudyError (a ValueError, printed as one line by the CLI).
    """

    study: optuna.Study
    metric: str
    direction: str
    n_startup: int = 5
    n_warmup: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1
    _history: dict[int, list[float]] = field(default_factory=dict)
    _n_complete: int = 0

    def __post_init__(self) -> None:
        if self.direction not in ("minimize", "maximize"):
            raise StudyError(f"direction must be minimize or maximize, got {self.direction!r}")
        for name, value, least in (("n_startup_trials", self.n_startup, 0), ("n_warmup_steps", self.n_warmup, 0),
                                   ("interval_steps", self.interval_steps, 1), ("n_min_trials", self.n_min_trials, 1)):
            if value < least:
                raise StudyError(f"study.{name} must be >= {least}, got {value}")

    def refresh(self) -> None:
        """Reload the completed trials' values (``should_prune`` does this itself at every call)."""
        completed = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        self._n_complete = len(completed)
        self._history = {}
        for t in completed:
            for step, value in (t.user_attrs.get("intermediate") or {}).items():
                self._history.setdefault(int(step), []).append(float(value))

    def should_prune(self, step: int, reported: Mapping[Any, float]) -> bool:
        """Whether a trial that has reported ``reported`` (``{step: value}``, this ``step`` included) stops."""
        self.refresh()
        if self._n_complete == 0 or self._n_complete < self.n_startup or step < self.n_warmup:
            return False
        steps = [int(s) for s in reported]
        nearest_lower = (step - self.n_warmup) // self.interval_steps * self.interval_steps + self.n_warmup
        if max((s for s in steps if s != step), default=-1) >= nearest_lower:
            return False  # not the first report in this interval
        values = np.asarray(list(reported.values()), dtype=float)
        with warnings.catch_warnings():  # numpy warns about an all-NaN slice, which is handled below
            warnings.simplefilter("ignore", RuntimeWarning)
            best = np.nanmax(values) if self.direction == "maximize" else np.nanmin(values)
        if math.isnan(best):
            return True
        others = self._history.get(step, [])
        if len(others) < self.n_min_trials:
            return False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            median = float(np.nanpercentile(np.asarray(others, dtype=float), 50))
        if math.isnan(median):
            return False
        return best < median if self.direction == "maximize" else best > median
