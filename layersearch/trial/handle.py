"""`Trial`: the one object every kind of training receives, ours and the user's.

A trial's training (the built-in loop, a user's Python function, a user's command through
`trial_from_env`) gets the sampled loss, its budget and seed, a device and a folder, and gives back metrics
through ``report``. What happens to a report (MLflow, Optuna, the pruning decision, a JSON line for the
parent process) is the ``reporter``'s business, injected by whoever runs the training, as Optuna's
``objective(trial)`` and Ray Tune's function trainables keep their machinery behind one handle. The only
piece of Optuna here is `Pruned`'s base class, so that code written for Optuna stops a layersearch trial too.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from optuna.exceptions import TrialPruned

from ..lossnet.loss import LossConfig, PerceptualLoss
from ..settings import LpipsSettings
from .metric_registry import RESTORATION, metric_set

__all__ = ["Pruned", "Reporter", "Trial", "TrialFailed", "metric_value", "score_images"]

#: ``reporter(step, metrics) -> reason or None``: records one report; a reason (``"lpips=0.21 at step 25 is
#: worse than the median"``) when the pruner says the trial should stop here.
Reporter = Callable[[int, dict[str, float]], "str | None"]


class Pruned(TrialPruned):
    """Raised by `Trial.report` when the pruner stops the trial; an ``optuna.TrialPruned``."""


class TrialFailed(Exception):
    """The training failed by itself (a NaN metric, a non-zero exit, a missing objective): the trial is
    recorded FAIL with this message as its reason, and the sweep goes on."""


def metric_value(name: str, value: Any, step: int | None = None) -> float:
    """``value`` as a finite float (0-d tensors and numpy scalars too), else TrialFailed naming it."""
    where = f" at step {step}" if step is not None else ""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TrialFailed(f"metric {name!r}{where} is a tensor of shape {tuple(value.shape)}, not one number")
        value = value.detach().float().item()
    if isinstance(value, bool) or not hasattr(value, "__float__"):
        raise TrialFailed(f"metric {name!r}{where} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise TrialFailed(f"metric {name!r} is {number}{where}")
    return number


def _batches(images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        return [images if images.ndim == 4 else images.unsqueeze(0)]
    return [img if img.ndim == 4 else img.unsqueeze(0) for img in images]


def score_images(outputs: torch.Tensor | Sequence[torch.Tensor], targets: torch.Tensor | Sequence[torch.Tensor],
                 scale: int = 0, lpips_net: str = "alex", lpips_weights: str = "imagenet",
                 names: Sequence[str] | None = None) -> dict[str, float]:
    """Mean restoration metrics of outputs against targets: `layersearch score`'s protocol.

    Args:
        outputs, targets: ``N x 3 x H x W`` RGB in [0, 1], or lists of ``3 x H x W`` (sizes may differ
            between pairs, not within one).
        scale: pixels shaved from each border for PSNR, SSIM and the piq metrics (the SR scale; 0 for none).
        names: which metrics (any registered restoration metric: ``haarpsi``, ``ms_ssim``...); None = ``lpips``,
            ``psnr_y``, ``ssim_y``.
    """
    from .score import mean_scores  # scoring imports lpips and scikit-image: only when asked

    return mean_scores(_pairs(outputs, targets), scale, lpips_net, lpips_weights, names)


def _pairs(outputs: torch.Tensor | Sequence[torch.Tensor], targets: torch.Tensor | Sequence[torch.Tensor]
           ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One ``(1 x 3 x H x W, 1 x 3 x H x W)`` pair per image, in the order given."""
    pairs = []
    for out, tgt in zip(_batches(outputs), _batches(targets), strict=True):
        pairs += [(out[i : i + 1], tgt[i : i + 1]) for i in range(out.shape[0])]
    return pairs


class Trial:
    """What a trial's training receives; ``layersearch.Trial`` in the public API.

    Attributes:
        number: the Optuna trial number (for confirm runs: the number of the trial being confirmed).
        study_name: the study's name.
        params: the sampled parameters, by their Optuna names (``use_relu2_2``, ``w_relu2_2``, ...).
        layer_config: the sampled loss as the export schema (what ``PerceptualLoss.from_config`` loads).
        steps: the training budget to use (``trainer.steps`` in a sweep, ``confirm.steps`` in confirm).
        seed: the seed to train with (``trainer.seed``; each of confirm's seeds).
        device: the device this worker owns (its pinned GPU, or the CPU).
        dir: a folder for this trial's files; logged to its MLflow run when the trial ends.
        objectives: the study's objective metric names; the value returned must hold each of them.
        scored: the metrics `score` returns: the objectives that are restoration metrics, then
            ``metrics.names`` (or ``psnr_y``, ``ssim_y``); see ``trial.metric_registry.metric_set``.
        per_image, images: the latest evaluation's scores per image (``{metric: [value per image]}``) and
            the images' names in the same order, set by `score` and by the built-in training
            (`record_per_image`); a sweep records them with a complete trial for paired comparisons.
    """

    def __init__(self, *, number: int, study_name: str, params: Mapping[str, Any], layer_config: Mapping[str, Any],
                 steps: int, seed: int, device: str | torch.device, dir: str | Path, objectives: Sequence[str],
                 reporter: Reporter | None = None, loss_seed: int = 0,
                 lpips: LpipsSettings | None = None, metric_names: Sequence[str] | None = None):
        self.number, self.study_name = int(number), str(study_name)
        self.params, self.layer_config = dict(params), dict(layer_config)
        self.steps, self.seed = int(steps), int(seed)
        self.device = torch.device(device)
        self.dir = Path(dir).absolute()  # the same folder for a command started elsewhere
        self.objectives = list(objectives)
        self.scored = metric_set(RESTORATION, self.objectives, metric_names)
        self._reporter = reporter
        self._loss_seed = int(loss_seed)  # seeds random loss-network weights: the same net in every trial
        self._lpips = lpips or LpipsSettings(net="alex", weights="imagenet")  # the LPIPS of `layersearch score`
        self._loss: PerceptualLoss | None = None
        self._last_step: int | None = None
        self._prune: str | None = None  # the pruner's reason, once it has stopped the trial
        self.report_seconds = 0.0  # time spent in the reporter (tracking, pruning): not training
        self.per_image: dict[str, list[float]] = {}
        self.images: list[str] = []

    @property
    def loss(self) -> PerceptualLoss:
        """A `PerceptualLoss` built from ``layer_config`` on ``device`` (built on first use)."""
        if self._loss is None:
            self._loss = PerceptualLoss(LossConfig.from_mapping(self.layer_config), seed=self._loss_seed).to(self.device)
        return self._loss

    def report(self, step: int, **metrics: Any) -> None:
        """Record ``metrics`` at ``step`` (MLflow, Optuna); raise ``layersearch.Pruned`` when the pruner says so.

        Values must be finite numbers (0-d tensors are converted) and steps must increase; otherwise the
        trial fails with a reason naming the metric or step. To clean up before stopping, catch
        ``layersearch.Pruned`` around this call, or check ``should_prune()``.
        """
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise TrialFailed(f"report(step=...) takes a whole number, got {step!r}")
        step = int(step)  # numpy integers too
        if self._last_step is not None and step <= self._last_step:
            raise TrialFailed(f"report steps must increase: step {step} after step {self._last_step}")
        values = {str(name): metric_value(name, value, step) for name, value in metrics.items()}
        self._last_step = step
        if self._reporter is None:
            return
        started = time.perf_counter()
        try:
            reason = self._reporter(step, values)
        finally:
            self.report_seconds += time.perf_counter() - started
        if reason:
            self._prune = reason
            raise Pruned(reason)

    def should_prune(self) -> bool:
        """Whether the pruner has stopped this trial (sticky once True).

        A training that catches `Pruned` to clean up may re-raise it or just return: either way the trial is
        recorded as pruned.
        """
        return self._prune is not None

    @property
    def prune_reason(self) -> str | None:
        return self._prune

    @property
    def last_step(self) -> int | None:
        """The step of the last report (None before the first)."""
        return self._last_step

    def record_per_image(self, per_image: Mapping[str, Sequence[float]], images: Sequence[str] | None = None) -> None:
        """Keep the latest evaluation's scores per image, ``{metric: [value per image]}``, ``images`` naming
        them in the same order (default: their positions, "0", "1", ...).

        A sweep records them with the trial when it completes (user attributes ``per_image`` and
        ``images``), for each metric whose per-image mean is the value the training returned: paired
        comparisons of configs then block on the image.
        """
        values = {str(m): [float(v) for v in vs] for m, vs in per_image.items()}
        n = len(next(iter(values.values()), []))
        names = [str(i) for i in range(n)] if images is None else [str(name) for name in images]
        uneven = [m for m, vs in values.items() if len(vs) != len(names)]
        if uneven:
            raise ValueError(f"record_per_image: {', '.join(uneven)} do not have one value per image "
                             f"({len(names)} images)")
        self.per_image, self.images = values, names

    def score(self, outputs: torch.Tensor | Sequence[torch.Tensor], targets: torch.Tensor | Sequence[torch.Tensor],
              scale: int = 0, images: Sequence[str] | None = None) -> dict[str, float]:
        """The metrics of ``self.scored`` (by default ``lpips``, ``psnr_y``, ``ssim_y``; ``haarpsi`` and the
        others when they are objectives or in ``metrics.names``), with the protocol of `layersearch score`
        (see `score_images`).

        The values per image are kept too (`record_per_image`; ``images`` names the pairs in order, default
        their positions): score the same validation images in the same order in every trial, and return
        these means, for a sweep to record them.
        """
        from .score import mean_of, pair_scores  # scoring imports lpips and scikit-image: only when asked

        rows = pair_scores(_pairs(outputs, targets), scale, self._lpips.net, self._lpips.weights, self.scored)
        self.record_per_image({m: [row[m] for row in rows] for m in rows[0]}, images)
        return mean_of(rows)

    def __repr__(self) -> str:
        return (f"Trial(number={self.number}, study={self.study_name!r}, steps={self.steps}, seed={self.seed}, "
                f"device={self.device}, dir={str(self.dir)!r})")
