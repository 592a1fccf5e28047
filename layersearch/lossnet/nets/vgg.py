"""VGG (vgg11 .. vgg19, with or without batch norm): BasicSR's layer names, its own seeded initialiser.

Names, one per module of ``features``: ``conv{b}_{i}``, ``bn{b}_{i}``, ``relu{b}_{i}``, ``pool{b}``, numbered
from 1 (BasicSR's names; ``conv*`` is before its ReLU). The only kind BasicSR's VGGFeatureExtractor takes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import register_kind
from ._torchvision import TorchvisionNet

if TYPE_CHECKING:
    from torch import nn


def vgg_features(arch: str, upto: int | None = None) -> nn.Sequential:
    """The modules of ``torchvision.models.<arch>().features`` up to index ``upto``, with torchvision's init.

    Built here rather than through torchvision so that a random VGG initialises ``features`` alone (the full
    VGG with its classifier takes seconds on a CPU), and in the order that gave VGG its random weights before
    other networks came (tests/lossnet/test_vgg_unchanged.py). Module indices, so state-dict keys, match.
    """
    from torch import nn

    from ..registry import loss_network

    modules: list[nn.Module] = []
    in_ch = 3
    for info in loss_network(arch).table[: None if upto is None else upto + 1]:
        if info.kind == "Conv2d":
            conv = nn.Conv2d(in_ch, info.channels, kernel_size=3, padding=1)
            if conv.weight.device.type != "meta":
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(conv.bias)
            modules.append(conv)
            in_ch = info.channels
        elif info.kind == "BatchNorm2d":
            modules.append(nn.BatchNorm2d(info.channels))  # torchvision's init: weight 1, bias 0
        elif info.kind == "ReLU":
            modules.append(nn.ReLU(inplace=True))
        else:
            modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*modules)


@register_kind("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn")
class VGG(TorchvisionNet):
    family = "vgg"
    basicsr_names = True

    def build_model(self) -> nn.Module:
        from torch import nn

        holder = nn.Module()
        holder.features = vgg_features(self.name)
        return holder

    def name_units(self, units: list[tuple[str, nn.Module]]) -> list[str | None]:
        # BasicSR's names: conv{block}_{i}, bn{block}_{i}, relu{block}_{i}, pool{block}, from 1.
        from torch import nn

        names: list[str | None] = []
        block, i = 1, 0
        for _, module in units:
            if isinstance(module, nn.MaxPool2d):
                names.append(f"pool{block}")
                block, i = block + 1, 0
            else:
                i += isinstance(module, nn.Conv2d)
                kind = {nn.Conv2d: "conv", nn.BatchNorm2d: "bn", nn.ReLU: "relu"}[type(module)]
                names.append(f"{kind}{block}_{i}")
        return names
