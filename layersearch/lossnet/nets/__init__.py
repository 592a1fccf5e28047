"""The kinds of loss network, one module each; every module registers its networks when imported.

``load_all`` (called by the registry on first use) imports every module of this package whose name does not
start with ``_``: the built-in kinds in the order of ``layersearch.ARCHS``, then any other module in
alphabetical order. Adding a kind of network is adding one file here that subclasses
``lossnet.base.LossNetwork`` (or ``_torchvision.TorchvisionNet``) and registers its networks.

Built-in kinds (``_torchvision.TorchvisionNet``: torchvision's definitions and ImageNet weights, tables in
``layer_tables.json``):

- ``vgg``: vgg11 .. vgg19 with or without ``_bn``; BasicSR's names, its own seeded initialiser;
- ``alexnet``, ``squeezenet``: LPIPS's names;
- ``resnet``: resnet18, resnet50; block outputs; Gram statistics flagged as poor;
- ``module_paths``: efficientnet_b0, convnext_tiny; the children of ``features`` by module path.
"""

from __future__ import annotations

import importlib
import pkgutil

# The built-in kinds, in the order their networks are listed (layersearch.ARCHS, layer_tables.json).
BUILTIN_ORDER = ("vgg", "alexnet", "squeezenet", "resnet", "module_paths")


def load_all() -> None:
    """Import every kind module of this package (each registers its networks)."""
    found = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    ranked = sorted(found, key=lambda n: (BUILTIN_ORDER.index(n) if n in BUILTIN_ORDER else len(BUILTIN_ORDER), n))
    for name in ranked:
        importlib.import_module(f"{__name__}.{name}")
