"""Generates ``layer_tables.json``, the layer table of every loss network, from torchvision's module tree.

    .venv/bin/python -m layersearch.lossnet.tables      # rewrite the file (after a torchvision upgrade)

The tables are generated, never typed: the units of a network are the children of its trunk (every module
before the classification head, torchvision's ``features`` and ResNet's stages opened one level), each
kind of network names its taps by its own rule (``LossNetwork.name_units`` in ``lossnet/nets/``), and channels, stride and receptive field come from tracing the
network with ``torch.fx`` on the meta device. The JSON lets ``layersearch layers`` and every name check
answer without importing torch; ``tests/lossnet/test_tables.py`` fails while it and torchvision disagree.
"""

from __future__ import annotations

import json
import operator
import sys
from pathlib import Path

import torch
import torch.fx
import torchvision
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from .base import LossNetwork
from .layers import TABLES_FILE
from .registry import loss_network, network_names

# torchvision's classification heads: everything from here on is not part of a loss network.
HEAD = ("avgpool", "classifier", "fc")

# Operations that act on each position alone (or join branches of equal stride): the receptive field of
# their output is the largest of their inputs'. Anything not listed here or in _spatial stops generation,
# so that a new torchvision block cannot be given a wrong receptive field silently.
POSITIONWISE_MODULES = (nn.BatchNorm2d, nn.LayerNorm, nn.ReLU, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Linear, nn.Identity,
                        nn.Dropout, torchvision.ops.StochasticDepth)
POSITIONWISE_FUNCTIONS = {operator.add, operator.iadd, operator.mul, torch.cat, torch.permute, torch.add,
                          torch.nn.functional.layer_norm, torchvision.ops.stochastic_depth, "permute", "contiguous"}


def trunk_units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(module path, module) of the steps that, run in turn, compute the network up to its head.

    Top-level children before the head; a plain ``nn.Sequential`` (``features``, ResNet's ``layer1``) is
    opened one level, so its children are the units (a stage of EfficientNet stays one unit).
    """
    units: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if name in HEAD:
            continue
        if type(child) is nn.Sequential:
            units += [(f"{name}.{i}", grandchild) for i, grandchild in child.named_children()]
        else:
            units.append((name, child))
    return units


def _pair(value) -> int:
    a, b = (value, value) if isinstance(value, int) else tuple(value)
    if a != b:
        raise NotImplementedError(f"non-square window {value}")
    return int(a)


def _spatial(module: nn.Module | None, rf: int, jump: int) -> tuple[int, int] | None:
    """(receptive field, jump) after a window op, or None if ``module`` is not one."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        dilation = _pair(getattr(module, "dilation", 1))
        return rf + (_pair(module.kernel_size) - 1) * dilation * jump, jump * _pair(module.stride)
    return None


def _is_positionwise(node: torch.fx.Node, module: nn.Module | None) -> bool:
    if module is not None:
        return isinstance(module, POSITIONWISE_MODULES)
    return node.target in POSITIONWISE_FUNCTIONS


def unit_geometry(model: nn.Module, paths: list[str]) -> dict[str, tuple[int, int, int]]:
    """{unit path: (channels, stride, receptive field)} from the traced graph of ``model`` (on any device).

    Receptive field and stride ("jump") are propagated node by node: a window op of kernel k, stride s and
    dilation d gives ``rf + (k - 1) * d * jump`` and ``jump * s``; a position-wise op takes the largest of
    its inputs. Global pooling (squeeze-and-excitation) yields a per-channel scale, not a spatial map: it is
    left out, so the fields are those of the convolutional path.
    """
    model = model.eval()
    graph = torch.fx.GraphModule(model, torch.fx.Tracer().trace(model))
    device = next(model.parameters()).device
    ShapeProp(graph).propagate(torch.empty(1, 3, 224, 224, device=device))
    geometry: dict[torch.fx.Node, tuple[int, int] | None] = {}
    last: dict[str, torch.fx.Node] = {}
    for node in graph.graph.nodes:
        if node.op == "placeholder":
            geometry[node] = (1, 1)
            continue
        inputs = [geometry[a] for a in node.all_input_nodes if geometry.get(a) is not None]
        module = graph.get_submodule(node.target) if node.op == "call_module" else None
        if node.op in ("get_attr", "output") or not inputs or isinstance(module, nn.AdaptiveAvgPool2d):
            geometry[node] = None
        else:
            if len({jump for _, jump in inputs}) != 1:
                raise NotImplementedError(f"{node.name}: inputs of different strides {inputs}")
            rf, jump = max(inputs)
            spatial = _spatial(module, rf, jump)
            if spatial is None and not _is_positionwise(node, module):
                raise NotImplementedError(f"{node.name}: {node.target} is neither a known window op nor "
                                          "position-wise; teach layersearch.lossnet.tables about it")
            geometry[node] = spatial or (rf, jump)
        scopes = list(node.meta.get("nn_module_stack", {}))
        if scopes and geometry[node] is not None:
            scope = scopes[-1].split("@")[0]
            for path in paths:
                if scope == path or scope.startswith(path + "."):
                    last[path] = node
    out = {}
    for path in paths:
        node = last[path]
        rf, jump = geometry[node]
        out[path] = (int(node.meta["tensor_meta"].shape[1]), jump, rf)
    return out


def network_table(arch: str | LossNetwork) -> dict:
    """One network's entry of ``layer_tables.json``: its units and one row per named layer, named by the
    network's kind (``name_units``). Any network can be given, registered or not (a kind without a
    ``layer_tables.json`` entry generates its table through this on first use)."""
    net = arch if isinstance(arch, LossNetwork) else loss_network(arch)
    model = net.meta_model()
    units = net.trunk_units(model)
    paths = [path for path, _ in units]
    geometry = unit_geometry(model, paths)
    rows = []
    for index, ((path, module), name) in enumerate(zip(units, net.name_units(units), strict=True)):
        if name is not None:
            channels, stride, rf = geometry[path]
            rows.append([name, index, type(module).__name__, channels, stride, rf])
    return {"units": paths, "layers": rows}


def generate() -> dict:
    """The table of every network whose kind keeps it in ``layer_tables.json`` (the built-in ones)."""
    return {
        "about": "generated by `python -m layersearch.lossnet.tables` from torchvision's module tree; "
                 "rows: name, unit index, module class, channels, stride, receptive field (px)",
        "torchvision": torchvision.__version__.split("+")[0],
        "networks": {arch: network_table(arch) for arch in network_names() if loss_network(arch).in_tables_file},
    }


def render(tables: dict) -> str:
    """The file's text: one line per layer, so that a diff shows what changed."""
    lines = ["{", f'  "about": {json.dumps(tables["about"])},', f'  "torchvision": {json.dumps(tables["torchvision"])},',
             '  "networks": {']
    nets = list(tables["networks"].items())
    for k, (arch, table) in enumerate(nets):
        lines.append(f'    "{arch}": {{"units": {json.dumps(table["units"])}, "layers": [')
        rows = [f"      {json.dumps(row)}" for row in table["layers"]]
        lines.append(",\n".join(rows))
        lines.append("    ]}" + ("," if k + 1 < len(nets) else ""))
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    path = Path(TABLES_FILE)
    path.write_text(render(generate()))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
