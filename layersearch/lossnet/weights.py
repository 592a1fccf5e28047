"""Weights of the loss networks: ``imagenet`` (the network's own pretrained weights; torchvision's weights
API for the built-in kinds), a local file, or an explicit, loudly labelled ``random`` initialisation. Never a
silent fallback.

The rules for the spec, the caching and the checks are here, the same for every kind; what differs per
network (its initialiser, its pretrained file, which keys are its trunk) is asked of its LossNetwork object
(``registry.loss_network(arch)``). Shared by the loss networks (every registered one) and the LPIPS backbone
(AlexNet, VGG, SqueezeNet).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..errors import LayersearchError, RandomWeightsWarning
from .base import BUILDER
from .registry import builtin_names, loss_network

RANDOM = "random"
IMAGENET = "imagenet"


class WeightsError(LayersearchError, RuntimeError):
    """Weights could not be had: no network for ``imagenet``, a missing or mismatched file."""


def is_random(weights: str) -> bool:
    return str(weights) == RANDOM


def any_random(*weights: str | None) -> bool:
    """The one rule for labelling a result as made with random weights.

    Pass the weights spec of every network that produced the result (the loss network, the LPIPS backbone);
    ``None`` for a network the result did not use (a pixel-only loss runs no loss network).
    """
    return any(w is not None and is_random(w) for w in weights)


def weights_for(arch: str, loss_net_weights: str | None) -> str:
    """The weights ``arch`` runs with under a config's ``loss_net.weights``: ``random`` for every network when it
    is ``random`` (a smoke run); else that spec for a built-in network, and a declared network's own
    (its declaration's; by default its builder's or timm's pretrained) for one of the user's."""
    net = loss_network(arch)
    if loss_net_weights is not None and (is_random(loss_net_weights) or not net.taps_by_hooks):
        return str(loss_net_weights)
    return net.default_weights


def ready_weights(arch: str, weights: str) -> None:
    """Read (or build) ``arch``'s weights now, so that a missing file or an offline download fails at start-up
    rather than in the first trial; they stay cached for the run."""
    net = loss_network(arch)
    if net.taps_by_hooks:
        net.model(weights)
    else:
        trunk_state_dict(arch, weights)


def weights_label(weights: str) -> str:
    """Short label for outputs: ``imagenet``, ``random``, ``builder`` (a declared network's own) or ``file:<name>``."""
    weights = str(weights)
    if weights in (RANDOM, IMAGENET, BUILDER):
        return weights
    return f"file:{Path(weights).name}"


def _file_state_dict(path: str) -> dict[str, torch.Tensor]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise WeightsError(
            f"weights {path!r}: no such file (expected 'imagenet', 'random' or a path to a .pth state dict)"
        )
    try:
        if file.suffix == ".safetensors":  # timm's and the Hub's format
            from safetensors.torch import load_file

            state = load_file(str(file), device="cpu")
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and truncation errors all mean the same to a user
        raise WeightsError(f"weights file {file} could not be read as a state dict: {err}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {file} does not hold a state dict of tensors")
    return state


# (arch, weights spec, seed or file identity) -> the trunk's state dict, frozen, made once per process.
_SHARED: dict[tuple[str, str, int], dict[str, torch.Tensor]] = {}


def shared_features(arch: str, weights: str, seed: int) -> dict[str, torch.Tensor]:
    """The loss network's trunk state dict for a weights spec, read (or, for ``random``, initialised) once per process.

    Every later call with the same ``(arch, weights, seed)`` returns the same tensors: a sweep's trials share
    one copy of the loss network instead of re-reading the file. The tensors are frozen weights and must
    not be modified in place; a module that loads them with ``assign=True`` shares them.

    Args:
        arch: a registered network (``layersearch.ARCHS`` and any registered since).
        weights: ``imagenet``, ``random`` or a path (see ``trunk_state_dict``).
        seed: the initialisation seed; it matters only for ``random`` weights.

    Returns:
        The trunk's state dict with torchvision's keys (``features.0.weight``, ``layer1.0.conv1.weight``),
        tensors with ``requires_grad=False``, 4-D ones in channels_last layout.
    """
    weights = str(weights)
    state = trunk_state_dict(arch, weights)  # warns for random weights on every call, cached or not
    # id(state): the file cache below keeps one dict per file version, so a rewritten file is a new key.
    key = (arch, weights, int(seed) if state is None else id(state))
    if key not in _SHARED:
        net = loss_network(arch)
        if state is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                state = net.random_state()
        expected = net.trunk_shapes
        _SHARED[key] = {k: _frozen(v, expected[k].dtype) for k, v in state.items()}
    return _SHARED[key]


def _frozen(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # channels_last: the layout the loss network runs in (see FeatureExtractor).
    tensor = tensor.detach().to(dtype=dtype)
    return tensor.contiguous(memory_format=torch.channels_last) if tensor.dim() == 4 else tensor.contiguous()


def clear_shared() -> None:
    """Forget the shared weights (the next extractor reads or initialises them again)."""
    from .declared import _MODELS

    _MODELS.clear()
    _SHARED.clear()
    _FILES.clear()
    _TRUNKS.clear()


# (resolved path, mtime_ns, size) or ("imagenet:<arch>",) -> state dict as read: a file is read once per process.
_FILES: dict[tuple, dict[str, torch.Tensor]] = {}
# (arch, id of a dict in _FILES) -> its trunk entries, checked.
_TRUNKS: dict[tuple[str, int], dict[str, torch.Tensor]] = {}


def _read(arch: str, weights: str) -> dict[str, torch.Tensor]:
    if weights == IMAGENET:
        key: tuple = (f"imagenet:{arch}",)
        if key not in _FILES:
            _FILES[key] = loss_network(arch).imagenet_state_dict()
        return _FILES[key]
    return read_weights_file(weights)


def read_weights_file(path: str) -> dict[str, torch.Tensor]:
    """A state dict file as read, once per process per file version (a rewritten file is read again).

    Raises:
        WeightsError: no such file, or not a state dict of tensors.
    """
    file = Path(path).expanduser()
    key = (str(file.resolve()), *((file.stat().st_mtime_ns, file.stat().st_size) if file.is_file() else (-1, -1)))
    if key not in _FILES:
        _FILES[key] = _file_state_dict(path)
    return _FILES[key]


def warn_random(arch: str, stacklevel: int = 3) -> None:
    """The warning every use of random weights gives (results are labelled 'random' too)."""
    warnings.warn(
        f"{arch} uses RANDOM weights: scores and searches made with it mean little; every output "
        "is labelled 'random'",
        RandomWeightsWarning,
        stacklevel=stacklevel + 1,
    )


def trunk_state_dict(arch: str, weights: str) -> dict[str, torch.Tensor] | None:
    """The state dict of ``arch``'s trunk for a weights spec, checked against the network.

    Args:
        arch: a supported network.
        weights: ``imagenet``, ``random`` or a path to a state dict of the whole model (as torchvision
            downloads it) or, for networks whose trunk is ``features``, of ``features`` only.

    Returns:
        The trunk's entries with torchvision's keys (the head's are dropped), or None for ``random``.

    Raises:
        WeightsError: the weights cannot be had, or do not fit ``arch`` (saying which network they seem for).
    """
    weights = str(weights)
    if is_random(weights):
        warn_random(arch, stacklevel=3)
        return None
    state = _read(arch, weights)
    key = (arch, id(state))  # _FILES keeps every version read, so an id is never reused
    if key not in _TRUNKS:
        net = loss_network(arch)
        trunk = _with_counters(net.restrict(net.as_model_keys(state)), arch)
        _check_keys(net.trunk_shapes, trunk, arch, weights, state)
        _TRUNKS[key] = trunk
    return _TRUNKS[key]


def _with_counters(trunk: dict[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    # Files saved before PyTorch 0.4.1 (some of torchvision's ImageNet files) have no batch-norm
    # `num_batches_tracked`; BatchNorm's own loader fills it in, and a frozen network never reads it.
    counters = [k for k in loss_network(arch).trunk_shapes if k.endswith(".num_batches_tracked") and k not in trunk]
    # Only where the layer's statistics are there: a file without the layer stays a misfit.
    filled = {k: torch.tensor(0) for k in counters if k.replace("num_batches_tracked", "running_mean") in trunk}
    return {**trunk, **filled}


def features_state_dict(arch: str, weights: str) -> dict[str, torch.Tensor] | None:
    """The state dict of ``torchvision.models.<arch>().features`` (keys without ``features.``), or None for
    ``random``: the LPIPS backbones (alexnet, vgg16, squeezenet1_1)."""
    if loss_network(arch).trunk_roots != ["features"]:
        raise ValueError(f"{arch} is not built on `features`; use trunk_state_dict")
    state = trunk_state_dict(arch, weights)
    return None if state is None else {k[len("features."):]: v for k, v in state.items()}


def check_fits(module: torch.nn.Module, state: dict[str, torch.Tensor], arch: str, weights: str) -> None:
    """Raise a WeightsError unless ``state`` has exactly ``module``'s parameters with the same shapes.

    ``module`` is a ``features`` module (keys without the prefix) and may live on the meta device.
    """
    expected = {f"features.{k}": v for k, v in module.state_dict().items()}
    _check_keys(expected, {f"features.{k}": v for k, v in state.items()}, arch, weights)


def _check_keys(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], arch: str, weights: str,
                whole: dict[str, torch.Tensor] | None = None) -> None:
    problem = None
    for key, tensor in expected.items():
        if key not in state or state[key].shape != tensor.shape:
            found = "nothing" if key not in state else f"shape {tuple(state[key].shape)}"
            problem = f"parameter {key} should have shape {tuple(tensor.shape)}, the file has {found}"
            break
    extra = sorted(set(state) - set(expected))
    if problem is None and extra:
        problem = f"unexpected parameters {', '.join(extra[:4])}"
    if problem is not None:
        raise WeightsError(f"weights {weights_label(weights)} do not fit {arch}: {problem}; "
                           f"{_seems_for(state if whole is None else whole)}")


def _seems_for(state: dict[str, torch.Tensor]) -> str:
    """Which built-in network a state dict fits exactly, said as the end of an error message."""
    fits = []
    for arch in builtin_names():
        net = loss_network(arch)
        if net.taps_by_hooks:
            continue  # a whole module's state dict, checked by its own loader
        expected = net.trunk_shapes
        trunk = _with_counters(net.restrict(net.as_model_keys(state)), arch)
        if trunk.keys() == expected.keys() and all(trunk[k].shape == v.shape for k, v in expected.items()):
            fits.append(arch)
    if fits:
        return f"they seem to be for {' or '.join(fits)}"
    return f"they fit none of the supported networks ({', '.join(builtin_names())})"
