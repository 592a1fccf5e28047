"""AlexNet: LPIPS's names ``conv1..5``, ``relu1..5``, ``pool1``, ``pool2``, ``pool5``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import register_kind
from ._torchvision import TorchvisionNet

if TYPE_CHECKING:
    from torch import nn


@register_kind("alexnet")
class AlexNet(TorchvisionNet):
    family = "alexnet"

    def name_units(self, units: list[tuple[str, nn.Module]]) -> list[str | None]:
        # LPIPS's names: numbered by the convolution they follow (conv1, relu1, pool1, ..., pool5).
        from torch import nn

        names: list[str | None] = []
        n = 0
        for _, module in units:
            n += isinstance(module, nn.Conv2d)
            kind = {nn.Conv2d: "conv", nn.ReLU: "relu", nn.MaxPool2d: "pool"}[type(module)]
            names.append(f"{kind}{n}")
        return names
