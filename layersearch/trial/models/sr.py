"""A small SRResNet for x2^k super-resolution."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigValueError


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SRResNet(nn.Module):
    """Residual blocks, then one x2 pixel-shuffle stage per factor of 2, added to a bicubic upsample.

    Predicting the residual over bicubic lets a few hundred CPU steps produce a meaningful image, so short
    trials rank losses by what they add to detail, not by how fast a net learns colour.

    Args:
        scale: a power of two (4 for sr_x4).
        channels: feature width. n_blocks: residual blocks (no batch norm, as in EDSR).
    Input ``N x 3 x h x w`` in [0, 1]; output ``N x 3 x (scale*h) x (scale*w)``, not clamped.
    """

    def __init__(self, scale: int = 4, channels: int = 32, n_blocks: int = 4):
        super().__init__()
        if scale < 2 or 2 ** round(math.log2(scale)) != scale:
            raise ConfigValueError(f"task.scale: SRResNet scale must be a power of two >= 2, got {scale}")
        self.scale = scale
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.Sequential(*[ResidualBlock(channels) for _ in range(n_blocks)])
        self.body_tail = nn.Conv2d(channels, channels, 3, padding=1)
        stages: list[nn.Module] = []
        for _ in range(int(math.log2(scale))):
            stages += [nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2), nn.ReLU(inplace=True)]
        self.upsample = nn.Sequential(*stages)
        self.tail = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        feats = self.head(lr)
        feats = feats + self.body_tail(self.body(feats))
        base = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return base + self.tail(self.upsample(feats))
