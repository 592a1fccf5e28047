"""Shared fixtures: random-weight networks only; no test downloads anything."""

from __future__ import annotations

import warnings

import pytest
import torch

from layersearch.lossnet.weights import RandomWeightsWarning


@pytest.fixture(autouse=True)
def _quiet_random_weights():
    # Tests use random weights on purpose; the warning is asserted where it matters (test_features).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        yield


@pytest.fixture
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 32, 32, generator=g)
