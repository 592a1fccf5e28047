"""The one registry of loss networks: a name (``loss_net.arch``) -> its LossNetwork object.

    from layersearch.lossnet.registry import loss_network, register
    net = loss_network("resnet18")        # LayerError listing the known names if unknown
    net.layer_names(); net.gram_ok; net.basicsr_names; net.trunk(upto=4)

The built-in networks are registered by the modules of ``lossnet/nets/`` (one module per kind, found and
imported on first use); a module registers its networks with ``register(Kind("name"), ...)`` at import, or a
class with ``@register_kind("name1", "name2")``. ``builtin_names()`` (``layers.ARCHS``) are the names those
modules registered, in their order; ``network_names()`` adds any registered later (a test's toy network).

Nothing outside ``lossnet/`` tests a network's name: it asks the object (``gram_ok``, ``basicsr_names``...).
Imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable

from .base import LayerError, LossNetwork

_NETWORKS: dict[str, LossNetwork] = {}
_BUILTIN: tuple[str, ...] = ()
_loaded = False


def _load_builtin() -> None:
    global _loaded, _BUILTIN
    if not _loaded:
        _loaded = True
        from . import nets

        nets.load_all()
        _BUILTIN = tuple(_NETWORKS)


def register(*networks: LossNetwork) -> LossNetwork:
    """Make networks reachable by their ``name``; returns the last. A name can be registered once."""
    _load_builtin()  # so that built-in names come first, and a name cannot shadow one
    for net in networks:
        if not isinstance(net, LossNetwork):
            raise TypeError(f"register takes LossNetwork objects, got {net!r}")
        if net.name in _NETWORKS:
            raise ValueError(f"a loss network named {net.name!r} is already registered ({_NETWORKS[net.name]!r})")
        _NETWORKS[net.name] = net
    return networks[-1]


def register_kind(*names: str) -> Callable[[type[LossNetwork]], type[LossNetwork]]:
    """Class decorator: register one instance of the kind per name (``@register_kind("vgg11", "vgg16")``)."""
    def decorate(kind: type[LossNetwork]) -> type[LossNetwork]:
        register(*(kind(name) for name in names))
        return kind
    return decorate


def unregister(name: str) -> None:
    """Forget a network registered after the built-in ones (a test's toy); built-in names stay."""
    _load_builtin()
    if name in _BUILTIN:
        raise ValueError(f"{name} is a built-in loss network and stays registered")
    _NETWORKS.pop(name, None)


def network_names() -> tuple[str, ...]:
    """Every registered name, built-in first."""
    _load_builtin()
    return tuple(_NETWORKS)


def builtin_names() -> tuple[str, ...]:
    """The names the modules of ``lossnet/nets/`` register (``layersearch.ARCHS``)."""
    _load_builtin()
    return _BUILTIN


def find_network(name: str) -> LossNetwork | None:
    """The network registered as ``name``, or None."""
    _load_builtin()
    return _NETWORKS.get(str(name))


def loss_network(name: str) -> LossNetwork:
    """The network registered as ``name``; LayerError (one line, listing the known names) otherwise."""
    net = find_network(name)
    if net is None:
        raise LayerError(f"unknown loss network architecture {name!r}; choose one of: {', '.join(network_names())}")
    return net


def gram_ok(name: str) -> bool:
    """False for a known network whose Gram (style) statistics are poor (``LossNetwork.gram_ok``), else True."""
    net = find_network(name)
    return net is None or net.gram_ok
