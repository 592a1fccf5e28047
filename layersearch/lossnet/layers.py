"""Canonical layer names of the loss networks, one table per architecture.

One name per module of torchvision's ``vgg*.features``, in forward order: ``conv{block}_{i}``,
``relu{block}_{i}``, ``pool{block}``, numbered from 1 (the table BasicSR and LPIPS use).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import LayersearchError

# torchvision's VGG configurations: channel counts, "M" for a 2x2 max-pool.
_VGG_CFG: dict[str, list[int | str]] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}
ARCHS: tuple[str, ...] = tuple(_VGG_CFG)


class LayerError(LayersearchError, ValueError):
    """An unknown architecture or layer name; the message lists the valid choices."""


@dataclass(frozen=True)
class LayerInfo:
    """One module of ``features``: its name, index, output channels, stride and receptive field (px)."""

    name: str
    index: int
    kind: str  # conv | relu | pool
    channels: int
    stride: int
    receptive_field: int


def _build_table(cfg: list[int | str]) -> list[LayerInfo]:
    table: list[LayerInfo] = []
    block, conv_i, channels, stride, rf = 1, 0, 3, 1, 1
    for item in cfg:
        if item == "M":
            rf += stride  # 2x2 window, stride 2
            stride *= 2
            table.append(LayerInfo(f"pool{block}", len(table), "pool", channels, stride, rf))
            block, conv_i = block + 1, 0
        else:
            conv_i += 1
            channels = int(item)
            rf += 2 * stride  # 3x3 window, stride 1
            table.append(LayerInfo(f"conv{block}_{conv_i}", len(table), "conv", channels, stride, rf))
            table.append(LayerInfo(f"relu{block}_{conv_i}", len(table), "relu", channels, stride, rf))
    return table


_TABLES: dict[str, list[LayerInfo]] = {arch: _build_table(cfg) for arch, cfg in _VGG_CFG.items()}


def check_arch(arch: str) -> str:
    """Return ``arch`` if it is a known loss network, else raise LayerError listing the known ones."""
    if arch not in _TABLES:
        raise LayerError(f"unknown loss network architecture {arch!r}; choose one of: {', '.join(ARCHS)}")
    return arch


def layer_table(arch: str) -> list[LayerInfo]:
    """All layers of ``arch`` in forward order."""
    return list(_TABLES[check_arch(arch)])


def layer_names(arch: str) -> list[str]:
    """Canonical layer names of ``arch`` (``vgg16`` or ``vgg19``) in forward order."""
    return [info.name for info in layer_table(arch)]


def layer_info(arch: str, name: str) -> LayerInfo:
    """The table row of one layer; raises LayerError with the valid names if it does not exist."""
    validate_layers(arch, [name])
    return next(info for info in _TABLES[arch] if info.name == name)


def validate_layers(arch: str, names) -> list[str]:
    """Check every name against ``arch``'s table and return them as a list.

    The error names the offending layer, says when it belongs to another architecture (``relu5_4`` on
    vgg16), and lists the valid names.
    """
    valid = layer_names(arch)
    names = list(names)
    for name in names:
        if name in valid:
            continue
        others = [a for a in ARCHS if a != arch and name in layer_names(a)]
        hint = f" (it exists in {', '.join(others)}; set loss_net.arch accordingly)" if others else ""
        raise LayerError(f"unknown layer {name!r} for {arch}{hint}; valid names: {', '.join(valid)}")
    return names


def format_layer_table(arch: str) -> str:
    """The table `layersearch layers ARCH` prints."""
    rows = [f"{'layer':<9} {'index':>5} {'channels':>8} {'stride':>6} {'receptive field':>15}"]
    for info in layer_table(arch):
        rf = f"{info.receptive_field}x{info.receptive_field}"
        rows.append(f"{info.name:<9} {info.index:>5} {info.channels:>8} {info.stride:>6} {rf:>15}")
    return "\n".join(rows)
