"""Johnson et al. 2016's image transformation network for fast style transfer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    # Reflection padding avoids the border artefacts zero padding leaves in stylised images.
    return nn.Sequential(nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride))


class _Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            _conv(channels, channels, 3), nn.InstanceNorm2d(channels, affine=True), nn.ReLU(inplace=True),
            _conv(channels, channels, 3), nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _Upsample(nn.Module):
    # Nearest upsampling + conv instead of transposed convs: no checkerboard artefacts (Odena et al. 2016).
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = _conv(cin, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TransformerNet(nn.Module):
    """9x9 conv, two stride-2 convs, residual blocks, two upsampling convs, 9x9 conv; instance norm.

    Args:
        channels: width of the first conv (Johnson: 32; it doubles at each down-sampling).
        n_blocks: residual blocks (Johnson: 5).
    Input ``N x 3 x H x W`` in [0, 1] with H, W divisible by 4; output the same size, not clamped.
    """

    def __init__(self, channels: int = 32, n_blocks: int = 5):
        super().__init__()
        c1, c2, c3 = channels, 2 * channels, 4 * channels

        def norm_relu(c: int) -> list[nn.Module]:
            return [nn.InstanceNorm2d(c, affine=True), nn.ReLU(inplace=True)]

        self.net = nn.Sequential(
            _conv(3, c1, 9), *norm_relu(c1),
            _conv(c1, c2, 3, stride=2), *norm_relu(c2),
            _conv(c2, c3, 3, stride=2), *norm_relu(c3),
            *[_Residual(c3) for _ in range(n_blocks)],
            _Upsample(c3, c2), *norm_relu(c2),
            _Upsample(c2, c1), *norm_relu(c1),
            _conv(c1, 3, 9),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # Predict a change to the content image: starting at identity makes short trials meaningful.
        return images + self.net(images)
