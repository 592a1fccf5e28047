"""Layer names of the loss networks: one table per network, generated from torchvision's module tree.

The tables live in ``layer_tables.json`` (written by ``python -m layersearch.lossnet.tables``), so that this
module, ``layersearch layers`` and every name check answer without importing torch. Names:

- VGG (``vgg11`` .. ``vgg19``, ``_bn``): one per module of ``features``: ``conv{b}_{i}``, ``bn{b}_{i}``,
  ``relu{b}_{i}``, ``pool{b}``, numbered from 1 (BasicSR's names; ``conv*`` is before its ReLU);
- ``alexnet``: ``conv1..5``, ``relu1..5``, ``pool1``, ``pool2``, ``pool5`` (LPIPS's names);
- ``squeezenet1_1``: LPIPS's ``relu1..relu7`` and the other modules ``conv1``, ``pool{n}``, ``fire{n}``;
- ``resnet18``, ``resnet50``: ``relu`` (stem), ``maxpool``, block outputs ``layer{s}.{k}`` and ``layer{s}``
  for a stage's last block (inside a block the in-place residual add overwrites everything);
- ``efficientnet_b0``, ``convnext_tiny``: the children of ``features`` by module path (``features.3``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..errors import LayersearchError

ARCHS: tuple[str, ...] = (
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    "alexnet", "squeezenet1_1", "resnet18", "resnet50", "efficientnet_b0", "convnext_tiny",
)
TABLES_FILE = Path(__file__).with_name("layer_tables.json")


class LayerError(LayersearchError, ValueError):
    """An unknown architecture or layer name; the message lists the valid choices."""


@dataclass(frozen=True)
class LayerInfo:
    """One named layer: its name, its unit's index in the trunk (for VGG: the index in ``features``), the
    module's class, output channels, stride and receptive field (px), and torchvision's module path."""

    name: str
    index: int
    kind: str
    channels: int
    stride: int
    receptive_field: int
    module: str


@cache
def _networks() -> dict:
    return json.loads(TABLES_FILE.read_text())["networks"]


@cache
def _table(arch: str) -> tuple[LayerInfo, ...]:
    net = _networks()[arch]
    return tuple(LayerInfo(name, index, kind, channels, stride, rf, net["units"][index])
                 for name, index, kind, channels, stride, rf in net["layers"])


def check_arch(arch: str) -> str:
    """Return ``arch`` if it is a known loss network, else raise LayerError listing the known ones."""
    if arch not in ARCHS:
        raise LayerError(f"unknown loss network architecture {arch!r}; choose one of: {', '.join(ARCHS)}")
    return arch


def is_vgg(arch: str) -> bool:
    """VGG with or without batch norm: the networks BasicSR's VGGFeatureExtractor takes."""
    return check_arch(arch).startswith("vgg")


def units(arch: str) -> list[str]:
    """Module paths of the steps that, run in turn, compute ``arch`` up to its classification head."""
    return list(_networks()[check_arch(arch)]["units"])


def trunk_roots(arch: str) -> list[str]:
    """Top-level modules holding the loss network's weights (``features``; ``conv1``, ``bn1``, ``layer1``...)."""
    return list(dict.fromkeys(path.split(".")[0] for path in units(arch)))


def layer_table(arch: str) -> list[LayerInfo]:
    """All named layers of ``arch`` in forward order."""
    return list(_table(check_arch(arch)))


def layer_names(arch: str) -> list[str]:
    """Canonical layer names of ``arch`` in forward order."""
    return [info.name for info in layer_table(arch)]


def layer_info(arch: str, name: str) -> LayerInfo:
    """The table row of one layer; raises LayerError with the valid names if it does not exist."""
    validate_layers(arch, [name])
    return next(info for info in _table(arch) if info.name == name)


def validate_layers(arch: str, names) -> list[str]:
    """Check every name against ``arch``'s table and return them as a list.

    The error names the offending layer, says when it is a module with another name here (``layer1.1`` of
    resnet18 is ``layer1``) or belongs to other networks (``relu5_4`` on vgg16), and lists the valid names.
    """
    valid = layer_names(arch)
    names = list(names)
    for name in names:
        if name in valid:
            continue
        renamed = [info.name for info in _table(arch) if info.module == name]
        others = [a for a in ARCHS if a != arch and name in layer_names(a)]
        hint = (f" (module {name} is named {renamed[0]} here)" if renamed else
                f" (it exists in {', '.join(others)})" if others else "")
        raise LayerError(f"unknown layer {name!r} for {arch}{hint}; valid names: {', '.join(valid)}")
    return names


def format_layer_table(arch: str) -> str:
    """The table `layersearch layers ARCH` prints: name, channels, stride, receptive field, module."""
    table = layer_table(arch)
    width = max(9, *(len(info.name) for info in table))
    rows = [f"{'layer':<{width}} {'channels':>8} {'stride':>6} {'receptive field':>15}  module"]
    for info in table:
        rf = f"{info.receptive_field}x{info.receptive_field}"
        rows.append(f"{info.name:<{width}} {info.channels:>8} {info.stride:>6} {rf:>15}  {info.module} ({info.kind})")
    return "\n".join(rows)
