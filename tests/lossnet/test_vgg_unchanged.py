"""VGG results stay what they were for the same seed: values recorded from the code before other networks came.

Recorded at commit b4aecef (random weights, seed 0) with the inputs below; any change to VGG's random
initialisation, layer indices, normalisation or loss terms moves them.
"""

from __future__ import annotations

import pytest
import torch

from layersearch import FeatureExtractor, PerceptualLoss


def pair() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)


LOSSES = {
    "johnson_sr": ({"loss_net": {"arch": "vgg16", "weights": "random"}, "content_layers": {"relu2_2": 1.0}},
                   0.022588316351175308),
    "johnson_style": ({"loss_net": {"arch": "vgg16", "weights": "random"}, "content_layers": {"relu3_3": 1.0},
                       "style_layers": {"relu1_2": 1.0, "relu2_2": 1.0, "relu3_3": 1.0, "relu4_3": 1.0},
                       "style_weight": 1e4}, 0.32892459630966187),
    "esrgan": ({"loss_net": {"arch": "vgg19", "weights": "random"}, "content_layers": {"conv5_4": 1.0},
                "criterion": "l1"}, 0.005520244594663382),
}

FEATURE_SUMS = {
    "vgg16": {"conv1_1": -2335.7464612905555, "relu2_2": 9241.417487662486, "pool3": 1591.153455695512,
              "relu5_3": 150.2218429966888},
    "vgg19": {"conv3_4": 901.9970819254535, "relu4_4": 977.8575248203379, "conv5_4": 2.594494301388181},
}


@pytest.mark.parametrize("name", LOSSES)
def test_loss_value_is_unchanged(name):
    config, expected = LOSSES[name]
    target, output = pair()
    assert PerceptualLoss.from_config(config)(output, target).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("arch", FEATURE_SUMS)
def test_feature_sums_are_unchanged(arch):
    images, _ = pair()
    out = FeatureExtractor(arch, list(FEATURE_SUMS[arch]), "random", seed=0)(images)
    for name, expected in FEATURE_SUMS[arch].items():
        assert out[name].double().sum().item() == pytest.approx(expected, rel=1e-5), name
