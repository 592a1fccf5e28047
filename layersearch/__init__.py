"""layersearch: find which loss-network layers a perceptual loss should use.

The public names load on first use (PEP 562), so ``layersearch --help`` and ``layersearch layers`` answer
without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import LayersearchError, RandomWeightsWarning

__version__ = "0.1.0"

_LAZY = {
    "FeatureExtractor": "lossnet.features",
    "ARCHS": "lossnet.layers",
    "LayerError": "lossnet.layers",
    "layer_names": "lossnet.layers",
    "layer_table": "lossnet.layers",
    "ConfigError": "lossnet.loss",
    "LossConfig": "lossnet.loss",
    "PerceptualLoss": "lossnet.loss",
    "gram_matrix": "lossnet.loss",
    "WeightsError": "lossnet.weights",
    "Trial": "trial.handle",
    "Pruned": "trial.handle",
    "TrialFailed": "trial.handle",
    "score_images": "trial.handle",
    "trial_from_env": "trial.env",
    "sweep": "search",
    "SweepResult": "search",
}

__all__ = [
    "ARCHS",
    "ConfigError",
    "FeatureExtractor",
    "LayerError",
    "LayersearchError",
    "LossConfig",
    "PerceptualLoss",
    "Pruned",
    "RandomWeightsWarning",
    "SweepResult",
    "Trial",
    "TrialFailed",
    "WeightsError",
    "gram_matrix",
    "layer_names",
    "layer_table",
    "score_images",
    "sweep",
    "trial_from_env",
]

if TYPE_CHECKING:
    from .lossnet.features import FeatureExtractor
    from .lossnet.layers import ARCHS, LayerError, layer_names, layer_table
    from .lossnet.loss import ConfigError, LossConfig, PerceptualLoss, gram_matrix
    from .lossnet.weights import WeightsError
    from .search import SweepResult, sweep
    from .trial.env import trial_from_env
    from .trial.handle import Pruned, Trial, TrialFailed, score_images


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'layersearch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
