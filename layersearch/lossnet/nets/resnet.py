"""ResNet-18/50: ``relu`` (stem), ``maxpool``, block outputs ``layer{s}.{k}`` and ``layer{s}`` for a stage's
last block (inside a block the in-place residual add overwrites everything). Gram statistics are flagged."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import register_kind
from ._torchvision import TorchvisionNet

if TYPE_CHECKING:
    from torch import nn


@register_kind("resnet18", "resnet50")
class ResNet(TorchvisionNet):
    family = "resnet"
    gram_ok = False
    gram_note = "residual features give poor Gram statistics (Wang, Li & Vasconcelos, CVPR 2021)"

    def name_units(self, units: list[tuple[str, nn.Module]]) -> list[str | None]:
        # Taps start at the stem's ReLU (bn1's output is overwritten by it in place); blocks by module path,
        # the last block of a stage by the stage's name (layer1 is layer1's last block: one name per tensor).
        names: list[str | None] = []
        for k, (path, _) in enumerate(units):
            stage = path.split(".")[0]
            last = k + 1 == len(units) or units[k + 1][0].split(".")[0] != stage
            names.append(None if path in ("conv1", "bn1") else stage if last and "." in path else path)
        return names
