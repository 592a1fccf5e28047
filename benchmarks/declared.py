"""`make bench` section 7: a network declared with ``module:`` (hooks, stopped after the deepest layer) against
the same network cut by the built-in path (a truncated chain of units), in the same run.

The same torchvision network is built both ways with the very same weights (the built-in trunk's random
weights, written to a file that the declared network loads), so both compute the same loss value; the step is
section 2's (output forward + backward, target forward; content term, MSE), timed interleaved (built-in,
declared, built-in, ...). The ratio is built-in time / declared time: 1 means the hooks cost nothing; the
goal is >= 0.9.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

from layersearch.lossnet.loss import LossConfig, PerceptualLoss
from layersearch.lossnet.registry import unregister
from layersearch.lossnet.weights import shared_features

# (built-in network, its layer, the same layer's module path in torchvision's model)
CASES = [("resnet18", "layer2", "layer2"), ("vgg16", "relu2_2", "features.8")]
GOAL = 0.9


def declared_pair(arch: str, layer: str, path: str, device: torch.device, folder: Path) -> tuple[PerceptualLoss, PerceptualLoss]:
    """(built-in loss, declared loss) at the same layer with the same weights."""
    builtin = PerceptualLoss(LossConfig.from_mapping(
        {"loss_net": {"arch": arch, "weights": "random"}, "content_layers": {layer: 1.0}})).to(device)
    whole = torchvision.models.get_model(arch, weights=None).state_dict()
    whole.update({k: v.contiguous() for k, v in shared_features(arch, "random", 0).items()})
    file = folder / f"{arch}.pth"
    torch.save(whole, file)
    name = f"declared_{arch}"
    unregister(name)
    declared = PerceptualLoss(LossConfig.from_mapping(
        {"loss_net": {"arch": name, "module": f"torchvision.models:{arch}", "weights": str(file)},
         "content_layers": {path: 1.0}})).to(device)
    return builtin, declared


def declared_steps(device: torch.device, output: torch.Tensor, target: torch.Tensor, repeats: int,
                   one_step: Callable, timed: Callable) -> list[dict]:
    """One row per case: median step times, the ratio built-in / declared (median and range), same value."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch, layer, path in CASES:
            builtin, declared = declared_pair(arch, layer, path, device, Path(tmp))
            values = (one_step(builtin, output, target), one_step(declared, output, target))  # and warm-up
            times: dict[str, list[float]] = {"builtin": [], "declared": []}
            for _ in range(repeats):
                for side, fn in (("builtin", builtin), ("declared", declared)):
                    times[side].append(timed(lambda fn=fn: one_step(fn, output, target), device))
            ratios = [b / d for b, d in zip(times["builtin"], times["declared"], strict=True)]
            rows.append({
                "network": arch, "layer": f"{layer} = {path}",
                "builtin_s": statistics.median(times["builtin"]), "declared_s": statistics.median(times["declared"]),
                "ratio": statistics.median(times["builtin"]) / statistics.median(times["declared"]),
                "low": min(ratios), "high": max(ratios),
                "same_value": abs(values[0] - values[1]) <= 1e-4 * max(1.0, abs(values[0])),
            })
            unregister(f"declared_{arch}")
    return rows


def declared_table(rows: list[dict]) -> list[str]:
    lines = ["| network | layer (built-in = module path) | built-in s | declared s | **ratio** (built-in/declared) "
             "| range | same value |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['network']} | {r['layer']} | {r['builtin_s']:.4f} | {r['declared_s']:.4f} | "
                     f"**{r['ratio']:.2f}x** | {r['low']:.2f}-{r['high']:.2f} | {'yes' if r['same_value'] else 'NO'} |")
    worst = min(r["ratio"] for r in rows)
    lines += ["", f"Goal declared >= {GOAL}x of the built-in path: {'MET' if worst >= GOAL else 'NOT MET'} "
              f"(worst {worst:.2f}x)."]
    return lines
