"""The registry of loss networks: every built-in name resolves to an object of its kind, and a kind defined
here (one small class, registered by name) is usable everywhere a name is, touching no other file."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from layersearch import (
    ARCHS,
    FeatureExtractor,
    LayerError,
    LossConfig,
    PerceptualLoss,
    layer_names,
    layer_table,
)
from layersearch.lossnet.base import LossNetwork
from layersearch.lossnet.layers import (
    TORCHVISION_ARCHS,
    check_arch,
    format_layer_table,
    layer_info,
    validate_layers,
)
from layersearch.lossnet.registry import (
    builtin_names,
    find_network,
    gram_ok,
    loss_network,
    network_names,
    register,
    unregister,
)
from layersearch.lossnet.tables import network_table
from layersearch.lossnet.weights import WeightsError, clear_shared, shared_features


@pytest.mark.parametrize("arch", TORCHVISION_ARCHS)
def test_every_builtin_name_resolves_to_its_object(arch):
    net = loss_network(arch)
    assert net.name == arch and find_network(arch) is net and check_arch(arch) == arch
    assert net.family and net.in_tables_file
    assert list(net.table) == layer_table(arch) and net.layer_names() == layer_names(arch)
    assert net.units[net.table[-1].index] == net.table[-1].module
    assert (net.mean, net.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert net.gram_ok == (net.family != "resnet") and bool(net.gram_note) == (not net.gram_ok)
    assert net.basicsr_names == (net.family == "vgg")
    assert net.weights_label("random") == "random" and net.weights_label("/x/y.pth") == "file:y.pth"


def test_archs_are_the_builtin_names_in_order():
    assert builtin_names() == ARCHS and network_names()[: len(ARCHS)] == ARCHS
    assert ARCHS[0] == "vgg11" and ARCHS[-1] == "efficientnet_lite0"


def test_an_unknown_name_is_one_line_listing_the_known_ones():
    with pytest.raises(LayerError) as err:
        loss_network("resnet34")
    assert str(err.value).count("\n") == 0
    assert str(err.value).startswith("unknown loss network architecture 'resnet34'; choose one of: vgg11, ")
    assert find_network("resnet34") is None and gram_ok("resnet34") and gram_ok("")


def test_a_name_registers_once_and_builtins_stay():
    with pytest.raises(ValueError, match="already registered"):
        register(loss_network("vgg16"))
    with pytest.raises(ValueError, match="built-in"):
        unregister("vgg16")


# ---- a new kind of loss network, defined in this file alone --------------------------------------------


class TinyNet(nn.Module):
    """A two-convolution classifier laid out as torchvision's are: ``features``, then a head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                      nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(inplace=True))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


class Tiny(LossNetwork):
    """The whole kind: how to build it, how to name its units, its normalisation and what it cautions."""

    family = "tiny"
    gram_ok = False
    gram_note = "a toy"
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.5, 1.0)

    def build_model(self) -> nn.Module:
        return TinyNet()

    def name_units(self, units):
        counts: dict[str, int] = {}
        names = []
        for _, module in units:
            kind = {nn.Conv2d: "conv", nn.ReLU: "relu", nn.MaxPool2d: "pool"}[type(module)]
            counts[kind] = counts.get(kind, 0) + 1
            names.append(f"{kind}{counts[kind]}")
        return names


@pytest.fixture
def tiny():
    net = register(Tiny("tiny"))
    yield net
    unregister("tiny")
    clear_shared()


def reference(images: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = TinyNet().eval()
    x = (images - torch.tensor(Tiny.mean).view(1, 3, 1, 1)) / torch.tensor(Tiny.std).view(1, 3, 1, 1)
    out = {}
    for name, module in zip(["conv1", "relu1", "pool1", "conv2", "relu2"], model.features, strict=True):
        x = module(x.clone())
        out[name] = x
    return out


def test_a_registered_kind_has_a_generated_layer_table(tiny):
    assert "tiny" in network_names() and "tiny" not in ARCHS and not gram_ok("tiny")
    assert layer_names("tiny") == ["conv1", "relu1", "pool1", "conv2", "relu2"]
    assert [(i.index, i.kind, i.channels, i.stride, i.receptive_field, i.module) for i in layer_table("tiny")] == [
        (0, "Conv2d", 4, 1, 3, "features.0"), (1, "ReLU", 4, 1, 3, "features.1"),
        (2, "MaxPool2d", 4, 2, 4, "features.2"), (3, "Conv2d", 8, 2, 8, "features.3"),
        (4, "ReLU", 8, 2, 8, "features.4")]
    assert network_table("tiny")["units"] == tiny.units and layer_info("tiny", "conv2").channels == 8
    assert "relu2" in format_layer_table("tiny")
    with pytest.raises(LayerError, match=r"'relu2_2' for tiny \(it exists in vgg13, .*\); valid names: conv1, "):
        validate_layers("tiny", ["relu2_2"])
    with pytest.raises(LayerError, match=r"'features.4' for tiny \(module features.4 is named relu2 here\)"):
        validate_layers("tiny", ["features.4"])


def test_a_registered_kind_builds_its_trunk_and_gives_features_and_a_loss(tiny, images):
    ext = FeatureExtractor("tiny", ["conv1", "pool1"], "random", seed=3)
    assert len(ext.body) == 3 and ext.network is tiny  # cut after pool1
    expected = reference(images, seed=3)
    out = ext(images)
    for name in ("conv1", "pool1"):
        torch.testing.assert_close(out[name], expected[name])
    assert (out["conv1"] < 0).any()  # the in-place ReLU after the tap computes out of place
    config = LossConfig.from_mapping({"loss_net": {"arch": "tiny", "weights": "random"},
                                      "content_layers": {"relu2": 1.0}, "style_layers": {"relu1": 1.0},
                                      "style_weight": 2.0})
    loss = PerceptualLoss(config)(images.flip(0), images)
    ref, ref_target = reference(images.flip(0)), reference(images)
    from layersearch.lossnet.loss import gram_matrix

    expected_loss = (torch.nn.functional.mse_loss(ref["relu2"], ref_target["relu2"])
                     + 2.0 * (gram_matrix(ref["relu1"]) - gram_matrix(ref_target["relu1"])).pow(2).sum(dim=(1, 2)).mean())
    torch.testing.assert_close(loss, expected_loss)


def test_a_registered_kind_loads_a_file_and_refuses_imagenet(tiny, images, tmp_path):
    torch.manual_seed(7)
    model = TinyNet()
    torch.save(model.state_dict(), tmp_path / "tiny.pth")
    ext = FeatureExtractor("tiny", ["relu2"], str(tmp_path / "tiny.pth"))
    assert ext.weights_label == "file:tiny.pth"
    torch.testing.assert_close(ext(images)["relu2"], reference(images, seed=7)["relu2"])
    assert set(shared_features("tiny", str(tmp_path / "tiny.pth"), 0)) == {k for k in model.state_dict()
                                                                          if k.startswith("features.")}
    with pytest.raises(WeightsError, match="^tiny has no ImageNet weights; "):
        FeatureExtractor("tiny", ["relu2"], "imagenet")
