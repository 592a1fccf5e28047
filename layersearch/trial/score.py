"""`layersearch score`: any model's outputs against targets, with the protocol the search uses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..outputs import atomic_write_json
from .data import DataError, folder_images
from .metric_registry import (
    RESTORATION,
    MetricContext,
    check_image_side,
    compute_metrics,
    lpips_graded,
    metric_set,
)
from .metrics import LPIPSMetric


def _by_stem(images: list[tuple[str, torch.Tensor]], folder: str) -> dict[str, tuple[str, torch.Tensor]]:
    # Match on the relative path without extension, so x.png scores against x.jpg.
    by_stem: dict[str, tuple[str, torch.Tensor]] = {}
    for name, img in images:
        key = str(Path(name).with_suffix(""))
        if key in by_stem:
            # Keeping either one silently would score an arbitrary file.
            raise DataError(f"{folder}: {by_stem[key][0]} and {name} both match the name {key}; keep one of them")
        by_stem[key] = (name, img)
    return by_stem


_METRICS: dict[tuple[str, str], LPIPSMetric] = {}


def lpips_metric(net: str = "alex", weights: str = "imagenet") -> LPIPSMetric:
    """One LPIPS metric per (net, weights) per process: its backbone is read once, not per trial."""
    key = (str(net), str(weights))
    if key not in _METRICS:
        _METRICS[key] = LPIPSMetric(net=key[0], weights=key[1])
    return _METRICS[key]


def score_names(names: Sequence[str] | None = None) -> tuple[str, ...]:
    """``names`` (a `metric_set` the caller resolved), or the default restoration set: lpips, psnr_y, ssim_y."""
    return tuple(names) if names else metric_set(RESTORATION)


def _lpips_for(names: Sequence[str], lpips_net: str, lpips_weights: str) -> LPIPSMetric | None:
    # LPIPS's backbone is loaded only when a metric reads it (a piq/PSNR scoring needs no ImageNet AlexNet).
    if lpips_graded(names):
        return lpips_metric(lpips_net, lpips_weights)
    return None


def score_pair(metric: LPIPSMetric | None, pred: torch.Tensor, target: torch.Tensor, scale: int,
               names: Sequence[str] | None = None) -> dict[str, float]:
    """The restoration metrics ``names`` (`score_names`) of one ``1 x 3 x H x W`` prediction against its
    target (on the CPU); ``metric`` is the LPIPS network, None when no metric of ``names`` needs it."""
    names = score_names(names)
    if pred.shape != target.shape:
        raise DataError(f"prediction is {pred.shape[-1]}x{pred.shape[-2]}, target is "
                        f"{target.shape[-1]}x{target.shape[-2]}; sizes must match")
    check_image_side(names, min(pred.shape[-2:]) - 2 * scale, f"these images less the {scale} px shave")
    pred, target = pred.detach().float().cpu().clamp(0, 1), target.detach().float().cpu()
    values = compute_metrics(names, pred, target, MetricContext(scale=scale, lpips=metric))
    return {name: float(v[0]) for name, v in values.items()}


def pair_scores(pairs: list[tuple[torch.Tensor, torch.Tensor]], scale: int, lpips_net: str = "alex",
                lpips_weights: str = "imagenet", names: Sequence[str] | None = None) -> list[dict[str, float]]:
    """`score_pair` of each ``(prediction, target)`` pair, in order: the per-image values `mean_scores` averages
    (`Trial.score` keeps them for paired comparisons blocked by image)."""
    if not pairs:
        raise DataError("nothing to score: no (output, target) pairs")
    names = score_names(names)
    metric = _lpips_for(names, lpips_net, lpips_weights)
    return [score_pair(metric, pred, target, scale, names) for pred, target in pairs]


def mean_of(rows: list[dict[str, float]]) -> dict[str, float]:
    """Each metric's mean over `pair_scores` rows."""
    return {k: sum(row[k] for row in rows) / len(rows) for k in rows[0]}


def mean_scores(pairs: list[tuple[torch.Tensor, torch.Tensor]], scale: int, lpips_net: str = "alex",
                lpips_weights: str = "imagenet", names: Sequence[str] | None = None) -> dict[str, float]:
    """The mean of `score_pair` over ``(prediction, target)`` pairs: what `score_images` returns."""
    return mean_of(pair_scores(pairs, scale, lpips_net, lpips_weights, names))


def score_folders(pred_dir: str, target_dir: str, scale: int, lpips_net: str = "alex",
                  lpips_weights: str = "imagenet", *, out: str | Path,
                  names: Sequence[str] | None = None) -> dict[str, Any]:
    """Score predictions against targets matched by relative file name; write per-image and mean values.

    Args:
        pred_dir, target_dir: folders of images (recursive).
        scale: pixels shaved from each border for ``psnr_y``/``ssim_y`` and the piq metrics (the SR scale; 0
            for none).
        out: where the JSON goes (the CLI's default: ``<outputs_dir>/score/<time>/scores.json``).
        names: the metrics (`score_names`: None = lpips, psnr_y, ssim_y).

    Returns:
        ``{"mean": {...}, "images": {name: {...}}, "unmatched": [...], "weights": ..., "out": path}``.
    """
    preds, targets = _by_stem(folder_images(pred_dir), pred_dir), _by_stem(folder_images(target_dir), target_dir)
    common = sorted(set(preds) & set(targets))
    if not common:
        raise DataError(f"no file names in {pred_dir} match those in {target_dir} (matched without extension)")
    names = score_names(names)
    metric = _lpips_for(names, lpips_net, lpips_weights)
    per_image: dict[str, dict[str, float]] = {}
    for key in common:
        (name, pred), (_, target) = preds[key], targets[key]
        try:
            per_image[name] = score_pair(metric, pred[None], target[None], scale, names)
        except DataError as err:
            raise DataError(f"{name}: {err}") from None
    mean = {k: sum(v[k] for v in per_image.values()) / len(per_image) for k in names}
    unmatched = sorted(set(preds) ^ set(targets))
    result = {
        "mean": mean,
        "images": per_image,
        "n_images": len(per_image),
        "unmatched": unmatched,
        "metrics": list(names),
        "protocol": {"shave": scale, "y_channel": "BT.601", "ssim": "gaussian 11x11 sigma 1.5",
                     "lpips_net": lpips_net if metric is not None else None, "piq": "RGB in [0, 1], data_range 1"},
        "weights": {"lpips": f"{lpips_net}/{metric.weights_label}" if metric is not None else "not used"},
        "random_weights": bool(metric is not None and metric.random_weights),
    }
    atomic_write_json(out, result)
    result["out"] = str(out)
    return result
