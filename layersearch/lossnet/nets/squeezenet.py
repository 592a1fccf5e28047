"""SqueezeNet 1.1: LPIPS's ``relu1..relu7`` and the other modules ``conv1``, ``pool{n}``, ``fire{n}``."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from ..registry import register_kind
from ._torchvision import TorchvisionNet

if TYPE_CHECKING:
    from torch import nn


@register_kind("squeezenet1_1")
class SqueezeNet(TorchvisionNet):
    family = "squeezenet"

    def name_units(self, units: list[tuple[str, nn.Module]]) -> list[str | None]:
        # LPIPS's relu1..relu7 are the ends of its seven slices of `features` (read from the lpips package);
        # the other modules: conv1, pool{n}, and Fire modules numbered as in the SqueezeNet paper (fire2..fire9).
        import lpips.pretrained_networks

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # lpips passes torchvision's deprecated pretrained=
            lpips_net = lpips.pretrained_networks.squeezenet(requires_grad=False, pretrained=False)
        ends = {f"features.{list(getattr(lpips_net, f'slice{k}')._modules)[-1]}": f"relu{k}"
                for k in range(1, lpips_net.N_slices + 1)}
        names: list[str | None] = []
        pools, fires = 0, 1
        for path, module in units:
            kind = type(module).__name__
            pools += kind == "MaxPool2d"
            fires += kind == "Fire"
            names.append(ends.get(path) or {"Conv2d": "conv1", "MaxPool2d": f"pool{pools}", "Fire": f"fire{fires}"}[kind])
        return names
