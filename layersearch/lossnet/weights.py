"""Pretrained weights for torchvision backbones: ImageNet through torchvision's weights API, a local
file, or an explicit, loudly labelled ``random`` initialisation. Never a silent fallback.

Shared by the loss network (VGG) and the LPIPS backbone (AlexNet, VGG, SqueezeNet).
"""

from __future__ import annotations

import urllib.error
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

from ..errors import LayersearchError, RandomWeightsWarning

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


def weights_label(weights: str) -> str:
    """Short label for outputs: ``imagenet``, ``random`` or ``file:<name>``."""
    weights = str(weights)
    if weights in (RANDOM, IMAGENET):
        return weights
    return f"file:{Path(weights).name}"


def _imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    enum = torchvision.models.get_model_weights(arch)
    spec = enum.DEFAULT
    try:
        # torchvision caches under $TORCH_HOME/hub/checkpoints, so this downloads at most once.
        return spec.get_state_dict(progress=False, check_hash=False)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        file_name = spec.url.rsplit("/", 1)[-1]
        raise WeightsError(
            f"could not fetch ImageNet weights for {arch} ({err.__class__.__name__}: {err}); offline? "
            f"put torchvision's file {file_name} somewhere and pass its path as the weights "
            f"(loss_net.weights=PATH for the loss network, metrics.lpips.weights=PATH for LPIPS), "
            f"or pass weights=random for a smoke run whose results mean little (make demo OFFLINE=1)"
        ) from None


def _file_state_dict(path: str) -> dict[str, torch.Tensor]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise WeightsError(
            f"weights {path!r}: no such file (expected 'imagenet', 'random' or a path to a .pth state dict)"
        )
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and truncation errors all mean the same to a user
        raise WeightsError(f"weights file {file} could not be read as a state dict: {err}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {file} does not hold a state dict of tensors")
    return state


# (arch, weights spec, seed) -> the whole ``features`` state dict, frozen, made once per process.
_SHARED: dict[tuple[str, str, int], dict[str, torch.Tensor]] = {}


def shared_features(
    arch: str, weights: str, seed: int, build: Callable[[], torch.nn.Module]
) -> dict[str, torch.Tensor]:
    """The ``features`` state dict for a weights spec, read (or, for ``random``, initialised) once per process.

    Every later call with the same ``(arch, weights, seed)`` returns the same tensors: a sweep's trials share
    one copy of the loss network instead of re-reading the file. The tensors are frozen weights and must
    not be modified in place; a module that loads them with ``assign=True`` shares them.

    Args:
        arch: a torchvision model name with a ``features`` module.
        weights: ``imagenet``, ``random`` or a path (see ``features_state_dict``).
        seed: the initialisation seed; it matters only for ``random`` weights.
        build: makes the whole, freshly initialised ``features`` module (called under ``seed``).

    Returns:
        The state dict, tensors with ``requires_grad=False``, 4-D ones in channels_last layout.
    """
    weights = str(weights)
    state = features_state_dict(arch, weights)  # warns for random weights on every call, cached or not
    # id(state): the file cache below keeps one dict per file version, so a rewritten file is a new key.
    key = (arch, weights, int(seed) if state is None else id(state))
    if key not in _SHARED:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = build()
        if state is not None:
            check_fits(module, state, arch, weights)
            module.load_state_dict(state)
        module.to(memory_format=torch.channels_last).requires_grad_(False)
        _SHARED[key] = {k: v.detach() for k, v in module.state_dict().items()}
    return _SHARED[key]


def clear_shared() -> None:
    """Forget the shared weights (the next extractor reads or initialises them again)."""
    _SHARED.clear()
    _FILES.clear()


# (resolved path, mtime_ns, size) or ("imagenet:<arch>",) -> state dict as read: a file is read once per process.
_FILES: dict[tuple, dict[str, torch.Tensor]] = {}


def features_state_dict(arch: str, weights: str) -> dict[str, torch.Tensor] | None:
    """The state dict of ``torchvision.models.<arch>().features`` for a weights spec.

    Args:
        arch: a torchvision model name whose model has a ``features`` module (vgg16, alexnet, ...).
        weights: ``imagenet``, ``random`` or a path to a state dict of the whole model (as torchvision
            downloads it) or of its ``features`` only.

    Returns:
        The ``features`` state dict, keys without the ``features.`` prefix, or None for ``random``.
    """
    weights = str(weights)
    if is_random(weights):
        warnings.warn(
            f"{arch} uses RANDOM weights: scores and searches made with it mean little; every output "
            "is labelled 'random'",
            RandomWeightsWarning,
            stacklevel=3,
        )
        return None
    if weights == IMAGENET:
        key = (f"imagenet:{arch}",)
        if key not in _FILES:
            _FILES[key] = _imagenet_state_dict(arch)
    else:
        file = Path(weights).expanduser()
        key = (str(file.resolve()), *((file.stat().st_mtime_ns, file.stat().st_size) if file.is_file() else (-1, -1)))
        if key not in _FILES:
            _FILES[key] = _file_state_dict(weights)
    state = _FILES[key]
    if any(k.startswith("features.") for k in state):
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    return state


def check_fits(module: torch.nn.Module, state: dict[str, torch.Tensor], arch: str, weights: str) -> None:
    """Raise a WeightsError unless ``state`` has exactly ``module``'s parameters with the same shapes.

    ``module`` may live on the meta device: only its parameter shapes are read.
    """
    expected = module.state_dict()
    for key, tensor in expected.items():
        if key not in state or state[key].shape != tensor.shape:
            found = "nothing" if key not in state else f"shape {tuple(state[key].shape)}"
            raise WeightsError(
                f"weights {weights_label(weights)} do not fit {arch}: parameter features.{key} should have "
                f"shape {tuple(tensor.shape)}, the file has {found} (a file for another architecture?)"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise WeightsError(
            f"weights {weights_label(weights)} do not fit {arch}: unexpected parameters "
            f"{', '.join('features.' + k for k in extra[:4])} (a file for another architecture?)"
        )

