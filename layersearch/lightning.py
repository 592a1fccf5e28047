"""PyTorch Lightning glue: `Reporter`, the callback that connects a `Trainer` to a layersearch trial.

    t = ...                                   # the trial handle: trial=python's argument, or trial_from_env()
    model = MySRModule(loss=t.loss)           # the sampled loss goes in like any other module argument
    reporter = Reporter(t, monitor="val_haarpsi", extra=["val_psnr_y"])
    Trainer(max_steps=t.steps, callbacks=[reporter], enable_progress_bar=False).fit(model, data)
    return reporter.last                      # {"haarpsi": ..., "psnr_y": ...}: the trial's values

At every validation end (not the sanity check) the callback reports the monitored metrics from
``trainer.callback_metrics`` at ``trainer.global_step``; the names reported are the logged names without a
``val_`` or ``val/`` prefix (or as ``rename`` says), so they match ``study.objectives``. When the pruner
stops the trial, ``t.report`` raises `layersearch.Pruned` there; Lightning stops (its ``on_exception`` hooks
and teardown run, loggers are finalised) and the exception leaves ``fit()``, which records the trial as
pruned. Inside a command trial (``trial_from_env``) reporting appends a line to the metrics file and the
sweep stops the whole process group instead.

Under DDP only global rank zero reports; with ``trial=python`` its pruning decision is broadcast, so every
rank raises at the same validation end. Works with ``lightning`` (``import lightning.pytorch``) or the older
``pytorch_lightning`` package, whichever is installed (``pip install 'layersearch[lightning]'``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import LayersearchError
from .trial.env import ENV, trial_from_env
from .trial.handle import Pruned, Trial, TrialFailed, metric_value

__all__ = ["Reporter", "callbacks_from_env"]


def _callback_base() -> type:
    try:
        from lightning.pytorch import Callback
    except ImportError:
        try:
            from pytorch_lightning import Callback
        except ImportError:
            raise LayersearchError("layersearch.lightning needs PyTorch Lightning: "
                                   "pip install 'layersearch[lightning]'") from None
    return Callback


def _reported_name(logged: str) -> str:
    for prefix in ("val_", "val/", "validation_", "validation/"):
        if logged.startswith(prefix):
            return logged[len(prefix):]
    return logged


class Reporter(_callback_base()):
    """Reports a Lightning training's validation metrics to a layersearch trial; prunes it when told.

    Args:
        trial: the `layersearch.Trial` handle (the function's argument, or ``trial_from_env()``).
        monitor: the logged metric the pruner reads first (an objective), e.g. ``"val_lpips"``.
        extra: more logged metrics to report (the other objectives, anything worth a curve).
        rename: logged name -> reported name, where stripping ``val_``/``val/`` does not give the objective.
        loss_attr: if given, ``setup`` sets ``pl_module.<loss_attr> = trial.loss`` (for a module built from a
            config, e.g. by ``hydra.utils.instantiate``, that cannot take the loss as an argument); it is a
            submodule then, so it follows the module to its device.

    Attributes:
        last: the values of the latest report, by reported name: return it from a ``trial=python`` function.
    """

    def __init__(self, trial: Trial, monitor: str, extra: Iterable[str] = (), rename: Mapping[str, str] | None = None,
                 loss_attr: str | None = None):
        super().__init__()
        if not isinstance(trial, Trial):
            raise TypeError(f"Reporter(trial, ...) takes the layersearch trial handle, got {type(trial).__name__}")
        self.trial = trial
        self.logged = list(dict.fromkeys([str(monitor), *map(str, extra)]))
        self.rename = {name: (rename or {}).get(name, _reported_name(name)) for name in self.logged}
        self.loss_attr = loss_attr
        self.last: dict[str, float] = {}

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self.loss_attr:
            setattr(pl_module, self.loss_attr, self.trial.loss)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return  # Lightning's sanity check runs a validation before any training: not a result
        step = int(trainer.global_step)
        pruned = False
        if trainer.is_global_zero and (self.trial.last_step is None or step > self.trial.last_step):
            values = self._values(trainer.callback_metrics, step)
            self.last = values
            try:
                self.trial.report(step, **values)
            except Pruned:
                pruned = True
        if trainer.world_size > 1:
            pruned = bool(trainer.strategy.broadcast(pruned, src=0))
        if pruned:
            # The same exception on every rank, so DDP's processes stop together; Lightning's own handler
            # runs the on_exception hooks and teardown, then re-raises it out of fit().
            raise Pruned(self.trial.prune_reason or f"pruned at step {step}")

    def _values(self, logged: Mapping[str, Any], step: int) -> dict[str, float]:
        missing = [name for name in self.logged if name not in logged]
        if missing:
            raise TrialFailed(f"Reporter: {', '.join(missing)} not logged at step {step}; logged: "
                              f"{', '.join(sorted(logged)) or 'nothing'} (self.log(...) in validation_step)")
        return {self.rename[name]: metric_value(name, logged[name], step) for name in self.logged}


def callbacks_from_env(monitor: str, extra: Iterable[str] = (), rename: Mapping[str, str] | None = None,
                       loss_attr: str | None = None) -> list[Any]:
    """``[Reporter(trial_from_env(), ...)]`` inside a command trial, ``[]`` outside a sweep.

    For an app (a Hydra app, a training script) that also runs on its own: ``Trainer(callbacks=[*mine,
    *callbacks_from_env("val_lpips", ["val_psnr_y"])])``.
    """
    if not os.environ.get(ENV["trial_json"]):
        return []
    # In a sweep a trial file that cannot be read is an error (NotInSweep, one line), not a reason to run unseen.
    return [Reporter(trial_from_env(exit_on_error=False), monitor, extra, rename, loss_attr)]
