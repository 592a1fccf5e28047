"""EfficientNet-B0 and ConvNeXt-Tiny: the children of ``features`` named by their module path (``features.3``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import register_kind
from ._torchvision import TorchvisionNet

if TYPE_CHECKING:
    from torch import nn


@register_kind("efficientnet_b0", "convnext_tiny")
class ModulePathNet(TorchvisionNet):
    family = "module_path"

    def name_units(self, units: list[tuple[str, nn.Module]]) -> list[str | None]:
        # Stem, stages (and ConvNeXt's downsampling) by torchvision's module path.
        return [path for path, _ in units]
