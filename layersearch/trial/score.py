"""`layersearch score`: any model's outputs against targets, with the protocol the search uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..outputs import atomic_write_json
from .data import DataError, folder_images
from .metrics import LPIPSMetric, psnr_y, ssim_y


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


def score_folders(pred_dir: str, target_dir: str, scale: int, lpips_net: str = "alex",
                  lpips_weights: str = "imagenet", *, out: str | Path) -> dict[str, Any]:
    """Score predictions against targets matched by relative file name; write per-image and mean values.

    Args:
        pred_dir, target_dir: folders of images (recursive).
        scale: pixels shaved from each border for ``psnr_y``/``ssim_y`` (the SR scale; 0 for none).
        out: where the JSON goes (the CLI's default: ``<outputs_dir>/score/<time>/scores.json``).

    Returns:
        ``{"mean": {...}, "images": {name: {...}}, "unmatched": [...], "weights": ..., "out": path}``.
    """
    preds, targets = _by_stem(folder_images(pred_dir), pred_dir), _by_stem(folder_images(target_dir), target_dir)
    common = sorted(set(preds) & set(targets))
    if not common:
        raise DataError(f"no file names in {pred_dir} match those in {target_dir} (matched without extension)")
    metric = LPIPSMetric(net=lpips_net, weights=lpips_weights)
    per_image: dict[str, dict[str, float]] = {}
    for key in common:
        (name, pred), (_, target) = preds[key], targets[key]
        if pred.shape != target.shape:
            raise DataError(
                f"{name}: prediction is {pred.shape[2]}x{pred.shape[1]}, target is "
                f"{target.shape[2]}x{target.shape[1]}; sizes must match"
            )
        p, t = pred[None], target[None]
        per_image[name] = {
            "lpips": float(metric(p, t)[0]),
            "psnr_y": float(psnr_y(p, t, scale)[0]),
            "ssim_y": float(ssim_y(p, t, scale)[0]),
        }
    mean = {k: sum(v[k] for v in per_image.values()) / len(per_image) for k in ("lpips", "psnr_y", "ssim_y")}
    unmatched = sorted(set(preds) ^ set(targets))
    result = {
        "mean": mean,
        "images": per_image,
        "n_images": len(per_image),
        "unmatched": unmatched,
        "protocol": {"shave": scale, "y_channel": "BT.601", "ssim": "gaussian 11x11 sigma 1.5",
                     "lpips_net": lpips_net},
        "weights": {"lpips": f"{lpips_net}/{metric.weights_label}"},
        "random_weights": metric.random_weights,
    }
    atomic_write_json(out, result)
    result["out"] = str(out)
    return result
