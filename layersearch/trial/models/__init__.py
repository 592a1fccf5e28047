"""Generators trained in each trial; one module per family."""

from .sr import SRResNet
from .style import TransformerNet

__all__ = ["SRResNet", "TransformerNet"]
