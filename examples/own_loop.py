"""Your own training loop searched from Python: `layersearch.sweep(train, overrides=[...])`.

The function receives the `layersearch.Trial` handle: ``t.loss`` (the sampled perceptual loss), ``t.steps``,
``t.seed``, ``t.device``, ``t.dir``; it reports validation scores with ``t.report`` (which raises
``layersearch.Pruned`` when the pruner stops the trial) and returns the final ones.

    python examples/own_loop.py              # a toy sweep with random weights (labelled so)
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

import layersearch


def make_images(n: int, size: int, seed: int) -> torch.Tensor:
    """Smooth random images in [0, 1]: blurred noise, so there is structure to restore."""
    g = torch.Generator().manual_seed(seed)
    return F.avg_pool2d(torch.rand(n, 3, size + 6, size + 6, generator=g), 7, stride=1).clamp(0, 1)


class Upscaler(nn.Module):
    """x2 super-resolution: bilinear upsampling plus a learned residual."""

    def __init__(self, channels: int = 16):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, 3, 3, padding=1))

    def forward(self, low: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)
        return (up + self.body(up)).clamp(0, 1)


def train(t: layersearch.Trial) -> dict[str, float]:
    torch.manual_seed(t.seed)
    high_train, high_val = make_images(16, 32, seed=0).to(t.device), make_images(4, 32, seed=1).to(t.device)
    low_val = F.avg_pool2d(high_val, 2)
    model = Upscaler().to(t.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    scores: dict[str, float] = {}
    for step in range(1, t.steps + 1):
        high = high_train[torch.randint(0, len(high_train), (4,))]
        loss = t.loss(model(F.avg_pool2d(high, 2)), high)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 5 == 0 or step == t.steps:
            with torch.no_grad():
                scores = t.score(model(low_val), high_val, scale=2)
            t.report(step, **scores)  # raises layersearch.Pruned when the pruner stops this trial
    return scores


if __name__ == "__main__":
    result = layersearch.sweep(train, overrides=[
        "study.name=own_loop", "study.n_trials=6", "study.objectives=[lpips,psnr_y]", "trainer.steps=20",
        "loss_net.weights=random", "metrics.lpips.weights=random", *sys.argv[1:],
    ])
    print(f"{result.counts['complete']} complete, {result.counts['pruned']} pruned; best: {result.best_rows}")
