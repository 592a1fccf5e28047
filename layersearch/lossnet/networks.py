"""The loss networks as modules: torchvision's definitions, cut into the units that ``layers.py`` names.

A network's *trunk* is everything before its classification head; its *units* are the steps that, run in
turn, compute it (``features.0``, ``features.1``, ... or ResNet's ``conv1``, ..., ``layer1.0``, ...). State
dicts here use torchvision's own keys (``features.0.weight``, ``layer1.0.bn1.running_mean``), so a file
torchvision downloads fits as it is.
"""

from __future__ import annotations

import copy
from functools import cache

import torch
import torchvision
from torch import nn

from .layers import layer_table, trunk_roots, units


def vgg_features(arch: str, upto: int | None = None) -> nn.Sequential:
    """The modules of ``torchvision.models.<arch>().features`` up to index ``upto``, with torchvision's init.

    Built here rather than through torchvision so that a random VGG initialises ``features`` alone (the full
    VGG with its classifier takes seconds on a CPU), and in the order that gave VGG its random weights before
    other networks came (tests/lossnet/test_vgg_unchanged.py). Module indices, so state-dict keys, match.
    """
    modules: list[nn.Module] = []
    in_ch = 3
    for info in layer_table(arch)[: None if upto is None else upto + 1]:
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


def build_model(arch: str) -> nn.Module:
    """A freshly initialised network (uses the global RNG) whose state-dict keys are torchvision's."""
    if arch.startswith("vgg"):
        holder = nn.Module()
        holder.features = vgg_features(arch)
        return holder
    return torchvision.models.get_model(arch, weights=None)


@cache
def _template(arch: str) -> nn.Module:
    # The whole network on the meta device: no memory, no initialisation; units are copied from it.
    with torch.device("meta"):
        return torchvision.models.get_model(arch, weights=None).eval()


def restrict(state: dict[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    """The entries of a whole-model state dict that belong to ``arch``'s trunk (the head is dropped)."""
    roots = tuple(f"{root}." for root in trunk_roots(arch))
    return {k: v for k, v in state.items() if k.startswith(roots)}


@cache
def trunk_shapes(arch: str) -> dict[str, torch.Tensor]:
    """The trunk's state dict as meta tensors (shape and dtype of every parameter and buffer, no data)."""
    return restrict(_template(arch).state_dict(), arch)


def trunk(arch: str, upto: int) -> nn.Sequential:
    """Units ``0..upto`` of ``arch`` as one Sequential on the meta device (load weights with ``assign=True``)."""
    template = _template(arch)
    return nn.Sequential(*(copy.deepcopy(template.get_submodule(path)) for path in units(arch)[: upto + 1]))


def unit_state(state: dict[str, torch.Tensor], arch: str, upto: int) -> dict[str, torch.Tensor]:
    """``state`` (torchvision's keys) re-keyed for ``trunk(arch, upto)``: ``layer1.0.conv1.weight`` -> ``4.conv1.weight``."""
    out = {}
    for i, path in enumerate(units(arch)[: upto + 1]):
        prefix = f"{path}."
        out.update({f"{i}.{k[len(prefix):]}": v for k, v in state.items() if k.startswith(prefix)})
    return out
