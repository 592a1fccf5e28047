"""Shared fixtures: random-weight networks only; no test downloads anything."""

from __future__ import annotations

import signal
import warnings

import pytest
import torch

from layersearch.lossnet.registry import network_names, unregister
from layersearch.lossnet.weights import RandomWeightsWarning, clear_shared


def pytest_configure(config):
    # A shell without job control starts a background command (`make test &`, `nohup .ci/run &`) with SIGINT
    # ignored, and an ignored signal stays ignored in every child: the sweeps that the signal tests Ctrl-C
    # would never see it. A handler of our own is reset to the default in children, so they get Ctrl-C.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _quiet_random_weights():
    # Tests use random weights on purpose; the warning is asserted where it matters (test_features).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        yield


@pytest.fixture(autouse=True)
def _forget_declared_networks():
    # A network declared in a test (loss_net=timm, a --config-dir's own) is registered for the process; the
    # next test must not see it (error messages list the known networks) nor a builder of the same name.
    before = set(network_names())
    yield
    added = set(network_names()) - before
    for name in added:
        unregister(name)
    if added:
        clear_shared()


@pytest.fixture
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 32, 32, generator=g)
