from __future__ import annotations

import pytest
import torchvision
from torch import nn

from layersearch import LayerError, layer_names
from layersearch.cli import main
from layersearch.lossnet.layers import layer_info, validate_layers


@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
def test_names_match_torchvision_modules(arch):
    features = torchvision.models.get_model(arch, weights=None).features
    names = layer_names(arch)
    assert len(names) == len(features)
    for name, module in zip(names, features, strict=True):
        expected = {"conv": nn.Conv2d, "relu": nn.ReLU, "pool": nn.MaxPool2d}[name.rstrip("0123456789_")]
        assert isinstance(module, expected), (name, module)
        if isinstance(module, nn.Conv2d):
            assert layer_info(arch, name).channels == module.out_channels


def test_known_names_and_counts():
    vgg16, vgg19 = layer_names("vgg16"), layer_names("vgg19")
    assert vgg16[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert "relu5_4" in vgg19 and "relu5_4" not in vgg16
    assert (len(vgg16), len(vgg19)) == (31, 37)


def test_stride_and_receptive_field():
    assert layer_info("vgg16", "relu2_2").stride == 2
    assert layer_info("vgg16", "relu2_2").receptive_field == 14
    # The textbook figure: VGG-16's pool5 sees 212 x 212 pixels.
    assert layer_info("vgg16", "pool5").receptive_field == 212
    assert layer_info("vgg19", "conv5_4").stride == 16


def test_unknown_layer_lists_valid_names():
    with pytest.raises(LayerError, match="valid names: conv1_1, relu1_1"):
        validate_layers("vgg16", ["relu9_9"])


def test_layer_of_other_arch_says_so():
    with pytest.raises(LayerError, match="relu5_4.*exists in vgg19"):
        validate_layers("vgg16", ["relu5_4"])


def test_unknown_arch():
    with pytest.raises(LayerError, match="choose one of: vgg16, vgg19"):
        layer_names("resnet50")


def test_cli_layers_prints_tables(capsys):
    assert main(["layers"]) == 0
    out = capsys.readouterr().out
    assert "relu2_2" in out and "relu5_4" not in out
    assert main(["layers", "vgg19"]) == 0
    out = capsys.readouterr().out
    assert "conv5_4" in out and "268x268" in out


def test_cli_layers_bad_arch(capsys):
    assert main(["layers", "vgg11"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vgg11" in err
