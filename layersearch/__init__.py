"""layersearch: find which loss-network layers a perceptual loss should use."""

from .features import FeatureExtractor
from .layers import ARCHS, LayerError, layer_names, layer_table
from .loss import ConfigError, LossConfig, PerceptualLoss, gram_matrix
from .weights import RandomWeightsWarning, WeightsError

__version__ = "0.1.0"

__all__ = [
    "ARCHS",
    "ConfigError",
    "FeatureExtractor",
    "LayerError",
    "LossConfig",
    "PerceptualLoss",
    "RandomWeightsWarning",
    "WeightsError",
    "gram_matrix",
    "layer_names",
    "layer_table",
]
