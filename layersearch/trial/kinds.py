"""Which training a trial runs (``trial=builtin|python|command``): one constructor for the sweep and confirm.

Every kind is a callable ``training(trial) -> metrics`` with ``kind``, ``label`` (what the study records),
``user_code`` (whether an exception in it is the user's, failing one trial, or ours, stopping the sweep),
``check()``, which validates in milliseconds what can be known before the first trial (the function
imports, the program exists), and ``prepare()``, which also loads what is heavy (the built-in task with its
data and weights), so that a start that cannot work fails before anything is created.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ..errors import LayersearchError
from .builtin import BuiltinTraining
from .command import CommandTraining
from .handle import Trial
from .python import PythonTraining

__all__ = ["KINDS", "Training", "TrialKindError", "make_training"]

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


def make_training(cfg: Mapping[str, Any], log: Callable[[str], None] = print) -> Training:
    """The training ``cfg['trial']`` names, not yet checked (call ``check()``, then ``prepare()``)."""
    settings = cfg.get("trial") or {"kind": "builtin"}
    kind = settings.get("kind", "builtin")
    if kind == "builtin":
        return BuiltinTraining(cfg)
    if kind == "python":
        return PythonTraining(settings.get("fn"))
    if kind == "command":
        data = cfg.get("data") or {}
        return CommandTraining(settings, cfg["metrics"]["lpips"], val_dir=data.get("val_dir"),
                               scale=int(cfg.get("scale") or 0), loss_seed=int(cfg.get("seed") or 0), log=log)
    raise TrialKindError(f"unknown trial kind {kind!r}; choose trial=builtin, trial=python or trial=command")
