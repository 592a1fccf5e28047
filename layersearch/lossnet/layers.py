"""Layer names of the loss networks, by network name: thin functions over the registry's network objects.

Every network knows its own table (``registry.loss_network(arch).table``); these functions are the names
the rest of layersearch imports. The built-in tables live in ``layer_tables.json`` (written by ``python -m
layersearch.lossnet.tables``), so this module, ``layersearch layers`` and every name check answer without
importing torch. Each kind's naming rule is described in its module under ``lossnet/nets/``.
"""

from __future__ import annotations

from .base import LayerError, LayerInfo
from .nets._torchvision import TABLES_FILE
from .registry import builtin_names, loss_network

#: The built-in loss networks (registered by the modules of ``lossnet/nets/``), in their order.
ARCHS: tuple[str, ...] = builtin_names()
#: The built-in networks defined by torchvision, whose tables are in ``layer_tables.json`` (the others, like
#: efficientnet_lite0, are read from their module by running it once: ``lossnet/probe.py``).
TORCHVISION_ARCHS: tuple[str, ...] = tuple(a for a in ARCHS if loss_network(a).in_tables_file)

__all__ = ["ARCHS", "TABLES_FILE", "TORCHVISION_ARCHS", "LayerError", "LayerInfo", "check_arch", "format_layer_table",
           "layer_info", "layer_names", "layer_table", "receptive_field", "trunk_roots", "units", "validate_layers"]


def check_arch(arch: str) -> str:
    """Return ``arch`` if it is a known loss network, else raise LayerError listing the known ones."""
    return loss_network(arch).name


def units(arch: str) -> list[str]:
    """Module paths of the steps that, run in turn, compute ``arch`` up to its classification head."""
    return loss_network(arch).units


def trunk_roots(arch: str) -> list[str]:
    """Top-level modules holding the loss network's weights (``features``; ``conv1``, ``bn1``, ``layer1``...)."""
    return loss_network(arch).trunk_roots


def layer_table(arch: str) -> list[LayerInfo]:
    """All named layers of ``arch`` in forward order."""
    return list(loss_network(arch).table)


def layer_names(arch: str) -> list[str]:
    """Canonical layer names of ``arch`` in forward order."""
    return loss_network(arch).layer_names()


def layer_info(arch: str, name: str) -> LayerInfo:
    """The table row of one layer; raises LayerError with the valid names if it does not exist."""
    return loss_network(arch).layer(name)


def validate_layers(arch: str, names) -> list[str]:
    """Check every name against ``arch``'s table and return them as a list.

    The error names the offending layer, says when it is a module with another name here (``layer1.1`` of
    resnet18 is ``layer1``) or belongs to other built-in networks (``relu5_4`` on vgg16), and lists the
    valid names.
    """
    return loss_network(arch).validate_layers(names)


def receptive_field(arch: str, name: str) -> int | None:
    """Input pixels one unit of layer ``name`` sees (traced, or measured for module-path networks; None when
    that is more than the 128 px probe)."""
    return loss_network(arch).receptive_field(name)


def format_layer_table(arch: str) -> str:
    """The table `layersearch layers ARCH` prints: name, channels, stride, receptive field, module."""
    return loss_network(arch).format_layer_table()
