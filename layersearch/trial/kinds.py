"""Which training a trial runs (``trial=builtin|python|command``): one constructor for the sweep and confirm.

Every kind is a callable ``training(trial) -> metrics`` with ``kind``, ``label`` (what the study records),
``user_code`` (whether an exception in it is the user's, failing one trial, or ours, stopping the sweep),
``check()``, which validates in milliseconds what can be known before the first trial (the function
imports, the program exists), and ``prepare()``, which also loads what is heavy (the built-in task with its
data and weights), so that a start that cannot work fails before anything is created.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..errors import LayersearchError
from ..settings import Settings
from .builtin import BuiltinTraining
from .command import CommandTraining
from .handle import Trial
from .metric_registry import RESTORATION, lpips_graded, metric_set
from .python import PythonTraining

__all__ = ["KINDS", "Training", "TrialKindError", "lpips_used", "make_training", "scored_metrics"]

KINDS = ("builtin", "python", "command")


class TrialKindError(LayersearchError, ValueError):
    """An unknown ``trial.kind``; one line listing the known ones."""


class Training(Protocol):
    kind: str
    label: str
    user_code: bool

    def check(self) -> None: ...

    def prepare(self) -> None: ...

    def __call__(self, trial: Trial) -> Any: ...


def make_training(settings: Settings, log: Callable[[str], None] = print,
                  fn: Callable[[Trial], Any] | None = None) -> Training:
    """The training ``settings.trial`` names, not yet checked (call ``check()``, then ``prepare()``).

    Args:
        fn: the function itself for ``trial=python`` (``layersearch.sweep(train, ...)``); else ``trial.fn``
            names it.
    """
    trial = settings.trial
    kind = trial.kind
    if kind == "builtin":
        return BuiltinTraining(settings)
    if kind == "python":
        return PythonTraining(fn if fn is not None else trial.fn)
    if kind == "command":
        return CommandTraining(trial, settings.metrics.lpips, val_dir=settings.data.val_dir, scale=settings.scale,
                               loss_seed=settings.seed, log=log)
    raise TrialKindError(f"unknown trial kind {kind!r}; choose trial=builtin, trial=python or trial=command")


def scored_metrics(settings: Settings, objectives: Sequence[str] | None) -> tuple[str, ...]:
    """The registered metrics a run computes: the built-in task's set (`metric_set` of its kind), or for a
    user's training what `Trial.score` returns (restoration metrics), given the study's ``objectives``."""
    kind = RESTORATION
    if settings.trial.kind == "builtin":
        from .tasks import task_class

        kind = task_class(settings.task).metric_kind
    return metric_set(kind, objectives, settings.metrics.names)


def lpips_used(settings: Settings, objectives: Sequence[str] | None) -> bool:
    """Whether a metric of `scored_metrics` reads LPIPS: only then do its backbone's weights (random ones
    label the results) matter."""
    return bool(lpips_graded(scored_metrics(settings, objectives)))
