"""The search over trials, in rooms that import each other only through their ``__init__``:

- ``loop``: the search space, preparing a study, the workers' ask/tell loop, one trial, many workers;
- ``results``: the study's answer (best trial or Pareto front), seed noise, the sweep's summary, export;
- ``tracking``: the MLflow records of a study (an experiment, a run per trial, a summary run);
- ``dashboards``: MLflow's UI and optuna-dashboard, served for a study;
- ``storage``: where a study lives (Optuna storages, URLs and passwords, locks, heartbeats, retries).

Each room imports only the ones listed below it (``loop`` and ``dashboards`` are independent, so are
``results`` and ``tracking``); the search imports trial and lossnet, never insight. The names here load on
first use (PEP 562): importing one room, e.g. ``storage`` for `layersearch ui`, does not import the loop.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_LAZY = {"run_sweep": "loop", "sweep": "loop", "SweepResult": "results"}

__all__ = ["SweepResult", "run_sweep", "sweep"]

if TYPE_CHECKING:
    from .loop import run_sweep, sweep
    from .results import SweepResult


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
