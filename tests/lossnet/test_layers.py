from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision
from torch import nn

from layersearch import ARCHS, LayerError, layer_names, layer_table
from layersearch.cli import main
from layersearch.lossnet.layers import TORCHVISION_ARCHS, layer_info, validate_layers

VGGS = [a for a in ARCHS if a.startswith("vgg")]


@pytest.mark.parametrize("arch", VGGS)
def test_vgg_names_match_torchvision_modules(arch):
    with torch.device("meta"):
        features = torchvision.models.get_model(arch, weights=None).features
    names = layer_names(arch)
    assert len(names) == len(features)
    for name, module in zip(names, features, strict=True):
        expected = {"conv": nn.Conv2d, "bn": nn.BatchNorm2d, "relu": nn.ReLU, "pool": nn.MaxPool2d}[
            name.rstrip("0123456789_")]
        assert isinstance(module, expected), (name, module)
        if isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
            assert layer_info(arch, name).channels == getattr(module, "out_channels", getattr(module, "num_features", 0))


def test_vgg16_and_vgg19_names_and_indices_are_as_before():
    vgg16, vgg19 = layer_names("vgg16"), layer_names("vgg19")
    assert vgg16[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert "relu5_4" in vgg19 and "relu5_4" not in vgg16
    assert (len(vgg16), len(vgg19)) == (31, 37)
    assert [info.index for info in layer_table("vgg16")] == list(range(31))
    assert (layer_info("vgg16", "relu2_2").index, layer_info("vgg19", "conv5_4").index) == (8, 34)


def test_bn_variants_name_batch_norm_between_conv_and_relu():
    assert layer_names("vgg11_bn")[:5] == ["conv1_1", "bn1_1", "relu1_1", "pool1", "conv2_1"]
    assert layer_info("vgg19_bn", "relu5_4").index == 51  # BasicSR's vgg19_bn table: 52 names


# Worked by hand: rf' = rf + (k - 1) * stride_so_far, stride' = stride * s, for every window op on the path.
HAND = {
    # VGG-16: 3x3 convs, 2x2 pools. The textbook figure: pool5 sees 212 x 212 pixels.
    ("vgg16", "relu2_2"): (128, 2, 14), ("vgg16", "pool5"): (512, 32, 212), ("vgg19", "conv5_4"): (512, 16, 252),
    ("vgg11_bn", "bn3_2"): (256, 4, 26),  # 1+2 | pool 2 | +4 | pool 6... : conv3_1 18, conv3_2 26
    # AlexNet: conv 11/4 -> 11; pool 3/2 -> 11 + 2*4 = 19; conv 5 -> 19 + 4*8 = 51; pool -> 67; 3 convs -> 163; pool -> 195.
    ("alexnet", "relu1"): (64, 4, 11), ("alexnet", "relu2"): (192, 8, 51), ("alexnet", "pool5"): (256, 32, 195),
    # SqueezeNet 1.1: conv 3/2 -> 3; pool 3/2 -> 7; a Fire's 3x3 expand adds 2 * stride: fire2 15, fire3 23.
    ("squeezenet1_1", "fire2"): (128, 4, 15), ("squeezenet1_1", "relu2"): (128, 4, 23),
    ("squeezenet1_1", "relu7"): (512, 16, 207),
    # ResNet-18: conv 7/2 -> 7; maxpool -> 11; two 3x3 per block: 27, 43; layer2.0 with stride 2: 43 + 8 + 16 = 67.
    ("resnet18", "relu"): (64, 2, 7), ("resnet18", "layer1"): (64, 4, 43), ("resnet18", "layer2.0"): (128, 8, 67),
    ("resnet18", "layer4"): (512, 32, 435),
    # ResNet-50: one 3x3 per bottleneck: layer1 = 11 + 3*8 = 35, layer2 = 35 + 8 + 3*16 = 91.
    ("resnet50", "layer1"): (256, 4, 35), ("resnet50", "layer2"): (512, 8, 91), ("resnet50", "layer4"): (2048, 32, 427),
    # EfficientNet-B0: stem 3/2 -> 3; stage 1 dw3 -> 7; stage 2 (dw3/2, dw3) -> 11, 19; stage 3 (dw5/2, dw5) -> 35, 67.
    ("efficientnet_b0", "features.2"): (24, 4, 19), ("efficientnet_b0", "features.3"): (40, 8, 67),
    # ConvNeXt-T: stem 4/4 -> 4; three 7x7 depthwise blocks: 4 + 3*6*4 = 76; downsample 2/2 -> 80; 80 + 3*6*8 = 224.
    ("convnext_tiny", "features.1"): (96, 4, 76), ("convnext_tiny", "features.3"): (192, 8, 224),
}


@pytest.mark.parametrize(("arch", "name"), list(HAND), ids=[f"{a}:{n}" for a, n in HAND])
def test_channels_stride_and_receptive_field_by_hand(arch, name):
    info = layer_info(arch, name)
    assert (info.channels, info.stride, info.receptive_field) == HAND[(arch, name)]


def test_every_family_is_covered_by_hand_values():
    families = {a.rstrip("0123456789_bn").split("_")[0] for a, _ in HAND}
    assert families == {"vgg", "alexnet", "squeezenet", "resnet", "efficientnet", "convnext"}


@pytest.mark.filterwarnings("ignore::UserWarning")  # lpips passes torchvision's deprecated pretrained=
def test_lpips_points_have_lpips_names():
    import lpips.pretrained_networks as nets

    for arch, cls in (("alexnet", nets.alexnet), ("squeezenet1_1", nets.squeezenet)):
        net = cls(requires_grad=False, pretrained=False)
        ends = [f"features.{list(getattr(net, f'slice{k}')._modules)[-1]}" for k in range(1, net.N_slices + 1)]
        by_module = {info.module: info.name for info in layer_table(arch)}
        assert [by_module[m] for m in ends] == [f"relu{k}" for k in range(1, net.N_slices + 1)]
    assert layer_names("alexnet") == ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3", "relu3",
                                      "conv4", "relu4", "conv5", "relu5", "pool5"]


def test_resnet_names_stem_and_blocks():
    assert layer_names("resnet18") == ["relu", "maxpool", "layer1.0", "layer1", "layer2.0", "layer2", "layer3.0",
                                       "layer3", "layer4.0", "layer4"]
    assert layer_info("resnet50", "layer3").module == "layer3.5"
    with pytest.raises(LayerError, match=r"'layer1.1' for resnet18 \(module layer1.1 is named layer1 here\)"):
        validate_layers("resnet18", ["layer1.1"])


def test_efficientnet_and_convnext_use_module_paths():
    assert layer_names("efficientnet_b0") == [f"features.{i}" for i in range(9)]
    assert layer_names("convnext_tiny") == [f"features.{i}" for i in range(8)]


def test_unknown_layer_lists_valid_names():
    with pytest.raises(LayerError, match="valid names: conv1_1, relu1_1"):
        validate_layers("vgg16", ["relu9_9"])
    with pytest.raises(LayerError, match=r"'relu2_2' for resnet50 \(it exists in vgg13, .*\); valid names: relu, maxpool, "):
        validate_layers("resnet50", ["relu2_2"])


def test_layer_of_other_arch_says_so():
    with pytest.raises(LayerError, match="relu5_4.*exists in vgg19, vgg19_bn"):
        validate_layers("vgg16", ["relu5_4"])


def test_unknown_arch():
    with pytest.raises(LayerError, match="'resnet34'; choose one of: vgg11, vgg11_bn, .*, efficientnet_lite0$"):
        layer_names("resnet34")


def test_cli_layers_prints_tables(capsys):
    assert main(["layers"]) == 0
    out = capsys.readouterr().out
    assert "relu2_2" in out and "relu5_4" not in out
    assert main(["layers", "vgg19"]) == 0
    out = capsys.readouterr().out
    assert "conv5_4" in out and "268x268" in out


@pytest.mark.parametrize("arch", TORCHVISION_ARCHS)
def test_cli_layers_prints_one_row_per_layer(arch, capsys):
    assert main(["layers", arch]) == 0
    rows = capsys.readouterr().out.splitlines()
    table = layer_table(arch)
    body = rows[-len(table):]
    assert rows[-len(table) - 1].split()[:3] == ["layer", "channels", "stride"]
    for info, row in zip(table, body, strict=True):
        cells = row.split()
        assert cells[:4] == [info.name, str(info.channels), str(info.stride), f"{info.receptive_field}x{info.receptive_field}"]


def test_cli_layers_bad_arch(capsys):
    assert main(["layers", "vgg12"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vgg12" in err and "resnet50" in err


def test_cli_layers_does_not_import_torch():
    code = ("import sys; from layersearch.cli import main; rc = main(['layers', 'resnet50']); "
            "assert rc == 0 and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "layer4" in proc.stdout
