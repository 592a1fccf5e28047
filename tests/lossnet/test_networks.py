"""Every loss network: the features and the loss equal torchvision's own feature extraction, batch norm
stays frozen, in-place ops do not overwrite taps, the pass stops at the deepest layer, weights files fit."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.models.feature_extraction import create_feature_extractor

from layersearch import ARCHS, FeatureExtractor, PerceptualLoss, WeightsError, layer_table
from layersearch.lossnet.features import IMAGENET_MEAN, IMAGENET_STD
from layersearch.lossnet.layers import TORCHVISION_ARCHS
from layersearch.lossnet.weights import shared_features


def reference_extractor(arch: str, names: list[str]) -> torch.nn.Module:
    """torchvision's create_feature_extractor over the same random weights, ReLUs out of place."""
    with torch.device("meta"):
        model = torchvision.models.get_model(arch, weights=None)
    # The trunk's tensors are assigned (the head stays on the meta device: its nodes are pruned).
    model.load_state_dict(shared_features(arch, "random", 0), strict=False, assign=True)
    for module in model.modules():
        if hasattr(module, "inplace"):
            module.inplace = False  # so that a tapped conv output is not overwritten in the reference either
    by_name = {info.name: info.module for info in layer_table(arch)}
    return create_feature_extractor(model.eval(), {by_name[n]: n for n in names})


def normalised(images: torch.Tensor) -> torch.Tensor:
    return (images - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


@pytest.mark.parametrize("arch", TORCHVISION_ARCHS)
def test_features_and_loss_equal_torchvision_feature_extraction(arch):
    g = torch.Generator().manual_seed(1)
    size = 64 if arch == "alexnet" else 32  # AlexNet's pool5 has no pixel left at 32 px
    target, output = (torch.rand(2, 3, size, size, generator=g) for _ in range(2))
    names = [info.name for info in layer_table(arch)]  # every layer of the table at once
    weights = {name: 1.0 + k / len(names) for k, name in enumerate(names)}
    loss_fn = PerceptualLoss.from_config({"loss_net": {"arch": arch, "weights": "random"}, "content_layers": weights})
    reference = reference_extractor(arch, names)
    with torch.no_grad():
        ours, theirs = loss_fn.extractor(output), reference(normalised(output))
        for name in names:
            # Random deep features grow large: the tolerance scales with them (the layouts sum in other orders).
            scale = theirs[name].abs().max().item()
            torch.testing.assert_close(ours[name], theirs[name], rtol=1e-4, atol=1e-5 * scale, msg=name)
        theirs_target = reference(normalised(target))
        expected = sum(w * torch.nn.functional.mse_loss(theirs[n], theirs_target[n]) for n, w in weights.items())
        torch.testing.assert_close(loss_fn(output, target), expected, rtol=1e-4, atol=1e-7)


BN_NETS = ["vgg16_bn", "resnet18", "efficientnet_b0"]


@pytest.mark.parametrize("arch", BN_NETS)
def test_batch_norm_statistics_do_not_move_while_a_generator_trains(arch, images):
    last = layer_table(arch)[4].name
    loss_fn = PerceptualLoss.from_config({"loss_net": {"arch": arch, "weights": "random"}, "content_layers": {last: 1.0}})
    norms = [m for m in loss_fn.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms
    before = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    model = torch.nn.ModuleDict({"generator": torch.nn.Conv2d(3, 3, 3, padding=1), "loss": loss_fn})
    model.train()  # what a training loop does to everything it holds
    loss_fn.extractor.body.train()  # and someone reaching inside
    optimizer = torch.optim.Adam(model["generator"].parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        loss_fn(model["generator"](images), images).backward()
        optimizer.step()
    assert not any(m.training for m in loss_fn.extractor.modules())
    for m, (mean, var, count) in zip(norms, before, strict=True):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
        assert torch.equal(m.num_batches_tracked, count)
    assert loss_fn.last_terms["total"] > 0


@pytest.mark.parametrize(("arch", "tap", "after"), [("vgg16_bn", "bn1_1", "relu1_1"), ("squeezenet1_1", "conv1", "relu1"),
                                                  ("alexnet", "conv2", "relu2"), ("vgg19", "conv5_4", "relu5_4")])
def test_a_tap_before_an_in_place_relu_is_not_overwritten(arch, tap, after, images):
    out = FeatureExtractor(arch, [tap, after], "random")(images)
    assert (out[tap] < 0).any(), f"{tap} was overwritten by the in-place ReLU"
    torch.testing.assert_close(out[after], out[tap].clamp_min(0))
    alone = FeatureExtractor(arch, [tap], "random")(images)[tap]
    torch.testing.assert_close(alone, out[tap])


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_the_network_is_cut_after_the_deepest_layer():
    ext = FeatureExtractor("resnet18", ["relu", "layer1"], "random")
    with torch.device("meta"):
        full = torchvision.models.resnet18()
    assert len(ext.body) == 6  # conv1 bn1 relu maxpool layer1.0 layer1.1
    assert n_params(ext) == n_params(full.conv1) + n_params(full.bn1) + n_params(full.layer1)
    assert len(FeatureExtractor("convnext_tiny", ["features.1"], "random").body) == 2


def test_a_subset_of_layers_stops_early(images):
    ext = FeatureExtractor("efficientnet_b0", ["features.1", "features.5"], "random")
    calls = []
    for k, unit in enumerate(ext.body):
        unit.register_forward_hook(lambda *a, k=k: calls.append(k))
    part = ext(images, ["features.1"])
    assert calls == [0, 1] and list(part) == ["features.1"]


@pytest.mark.parametrize("arch", ["resnet18", "convnext_tiny", "efficientnet_b0"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_gradient_layout_and_bf16_as_for_vgg(arch, layout, images):
    name = layer_table(arch)[3].name
    ext = FeatureExtractor(arch, [name], "random")
    x = images.contiguous(memory_format=layout).requires_grad_(True)
    fp32 = ext(x)[name]
    fp32.sum().backward()
    assert x.grad.is_contiguous(memory_format=layout)
    with torch.autocast("cpu", torch.bfloat16):
        bf16 = ext(images)[name]
    assert bf16.dtype in (torch.bfloat16, torch.float32) and torch.isfinite(bf16).all()
    scale = fp32.detach().abs().max()
    assert (bf16.float() - fp32.detach()).abs().max() < 0.1 * scale


def test_a_whole_model_file_loads_and_the_head_is_ignored(tmp_path, images):
    torch.manual_seed(4)
    model = torchvision.models.resnet18()
    torch.save(model.state_dict(), tmp_path / "resnet18.pth")
    ext = FeatureExtractor("resnet18", ["layer2"], str(tmp_path / "resnet18.pth"))
    model.eval()
    expected = create_feature_extractor(model, {"layer2": "layer2"})(normalised(images))["layer2"]
    torch.testing.assert_close(ext(images)["layer2"], expected, rtol=1e-4, atol=1e-5)


def test_a_file_without_batch_norm_counters_loads(tmp_path, images):
    # Some of torchvision's ImageNet files predate `num_batches_tracked`.
    torch.manual_seed(6)
    model = torchvision.models.vgg11_bn().eval()
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    ext = FeatureExtractor("vgg11_bn", ["relu2_1"], str(tmp_path / "old.pth"))
    torch.testing.assert_close(ext(images)["relu2_1"], model.features[:7](normalised(images)), rtol=1e-4, atol=1e-5)


def test_a_file_of_another_network_says_which_it_seems_to_be_for(tmp_path):
    with torch.device("meta"):
        resnet50 = torchvision.models.resnet50()
    torch.save({k: torch.zeros(v.shape, dtype=v.dtype) for k, v in resnet50.state_dict().items()}, tmp_path / "w.pth")
    with pytest.raises(WeightsError, match=r"do not fit resnet18: .*; they seem to be for resnet50$"):
        FeatureExtractor("resnet18", ["layer1"], str(tmp_path / "w.pth"))
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "odd.pth")
    with pytest.raises(WeightsError, match="fit none of the supported networks"):
        FeatureExtractor("alexnet", ["relu1"], str(tmp_path / "odd.pth"))


def test_a_features_only_file_loads_for_a_features_network(tmp_path, images):
    torch.manual_seed(5)
    model = torchvision.models.squeezenet1_1()
    torch.save(model.features.state_dict(), tmp_path / "squeeze.pth")
    ext = FeatureExtractor("squeezenet1_1", ["relu3"], str(tmp_path / "squeeze.pth"))
    torch.testing.assert_close(ext(images)["relu3"], model.features[:8](normalised(images)), rtol=1e-4, atol=1e-5)


def test_imagenet_offline_fails_fast_naming_the_file(monkeypatch, tmp_path):
    import urllib.error

    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(WeightsError, match=r"ImageNet weights for convnext_tiny .*convnext_tiny-983f1562\.pth"):
        FeatureExtractor("convnext_tiny", ["features.1"], "imagenet")


@pytest.mark.cuda
@pytest.mark.parametrize("arch", ARCHS)
def test_every_network_on_cuda_in_bf16_and_channels_last(arch):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    layer = [info.name for info in layer_table(arch) if info.stride <= 8][-1]
    loss_fn = PerceptualLoss.from_config({"loss_net": {"arch": arch, "weights": "random"},
                                          "content_layers": {layer: 1.0}}).cuda()
    g = torch.Generator().manual_seed(2)
    target, output = (torch.rand(4, 3, 96, 96, generator=g).cuda() for _ in range(2))
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in loss_fn.parameters() if p.dim() == 4)
    fp32 = loss_fn(output, target)
    x = output.clone().requires_grad_(True)
    with torch.autocast("cuda", torch.bfloat16):
        bf16 = loss_fn(x, target)
    bf16.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert abs(bf16.item() - fp32.item()) < 0.1 * abs(fp32.item())
