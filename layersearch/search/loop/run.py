"""`layersearch sweep` and ``layersearch.sweep(train, overrides=[...])``: run or resume a study.

With ``study.workers > 1`` (or ``study.trials_per_device``, or ``launcher=slurm``) this process prepares the
study and starts the workers (search/loop/launch.py); otherwise it is the one worker (search/loop/worker.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

from ...lossnet.declared import declare_from_settings
from ...settings import Settings
from ..results import SweepResult
from . import launch
from .worker import run_worker

__all__ = ["run_sweep", "sweep"]


def run_sweep(settings: Settings, fn: Callable[..., Any] | None = None) -> SweepResult:
    """Run (or resume) the study ``settings.study.name`` until it has ``n_trials`` complete+pruned trials.

    Args:
        fn: the training function itself for ``trial=python`` (else ``trial.fn`` names it).
    """
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    declare_from_settings(settings)
    if launch.wants_launcher(settings):
        return launch.run_launched(settings, fn)
    return run_worker(settings, fn)


def sweep(train: Callable[..., Any] | None = None, overrides: Sequence[str] = (),
          config_dirs: Sequence[str] = ()) -> SweepResult:
    """Search layer configs for ``train``, your own training, from Python; the CLI prints the same result.

    Args:
        train: ``train(trial) -> {metric: value}``, called once per trial with the `layersearch.Trial` handle
            (None: the training the overrides name, the built-in one by default).
        overrides: the command line's ``key=value`` and ``group=option`` overrides, e.g.
            ``["study.name=mine", "study.n_trials=20", "study.objectives=[val_psnr]",
            "study.directions=[maximize]"]``.
        config_dirs: folders of your own config groups (the CLI's ``--config-dir``).

    Returns:
        The `SweepResult`: counts, the best trials (or Pareto front) with the literature baselines.
    """
    from ...config import load_settings

    overrides = list(overrides)
    if train is not None and not any(o.startswith("trial=") for o in overrides):
        overrides.append("trial=python")
    return run_sweep(load_settings(overrides, list(config_dirs)), fn=train)
