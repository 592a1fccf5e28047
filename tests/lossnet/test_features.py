from __future__ import annotations

import pytest
import torch
import torchvision

from layersearch import FeatureExtractor, RandomWeightsWarning, WeightsError


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_truncated_after_deepest_layer():
    ext = FeatureExtractor("vgg16", ["relu2_2"], weights="random")
    assert n_params(ext) == 260_160
    ext = FeatureExtractor("vgg16", ["relu1_1", "relu3_1"], weights="random")
    assert len(ext.body) == 12  # up to and including relu3_1 (index 11)


def test_returns_exactly_requested_layers(images):
    ext = FeatureExtractor("vgg19", ["relu1_2", "pool2", "conv3_4"], weights="random")
    out = ext(images)
    assert set(out) == {"relu1_2", "pool2", "conv3_4"}
    assert out["relu1_2"].shape == (2, 64, 32, 32)
    assert out["pool2"].shape == (2, 128, 8, 8)
    assert out["conv3_4"].shape == (2, 256, 8, 8)


def test_a_subset_of_layers_stops_early_and_matches_the_full_pass(images):
    extractor = FeatureExtractor("vgg16", ["conv1_2", "relu2_2", "relu5_3"], weights="random")
    full = extractor(images)
    part = extractor(images, layers=["conv1_2", "relu2_2"])
    assert list(part) == ["conv1_2", "relu2_2"]
    for name, value in part.items():
        torch.testing.assert_close(value, full[name])
    with pytest.raises(ValueError, match="relu3_3"):
        extractor(images, layers=["relu3_3"])


def test_conv_output_is_pre_activation(images):
    ext = FeatureExtractor("vgg16", ["conv2_2", "relu2_2"], weights="random")
    out = ext(images)
    conv, relu = out["conv2_2"], out["relu2_2"]
    assert (conv < 0).any(), "conv2_2 was overwritten by the in-place ReLU"
    torch.testing.assert_close(relu, conv.clamp_min(0))
    # The same conv output, asked for alone, must not change.
    alone = FeatureExtractor("vgg16", ["conv2_2"], weights="random")(images)["conv2_2"]
    torch.testing.assert_close(alone, conv)


def test_frozen_gradients_reach_input_only(images):
    ext = FeatureExtractor("vgg16", ["relu3_3"], weights="random")
    ext.train()
    assert not ext.training
    assert not any(p.requires_grad for p in ext.parameters())
    x = images.clone().requires_grad_(True)
    ext(x)["relu3_3"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in ext.parameters())


def test_random_weights_warn_and_are_seeded(images):
    with pytest.warns(RandomWeightsWarning, match="RANDOM"):
        a = FeatureExtractor("vgg16", ["relu1_2"], weights="random", seed=1)
    b = FeatureExtractor("vgg16", ["relu1_2"], weights="random", seed=1)
    c = FeatureExtractor("vgg16", ["relu1_2"], weights="random", seed=2)
    assert a.random_weights and a.weights_label == "random"
    torch.testing.assert_close(a(images)["relu1_2"], b(images)["relu1_2"])
    assert not torch.allclose(a(images)["relu1_2"], c(images)["relu1_2"])


@pytest.mark.parametrize("prefix", ["features.", ""])
def test_loads_local_file(tmp_path, images, prefix):
    torch.manual_seed(3)
    model = torchvision.models.vgg16()
    state = model.state_dict() if prefix else model.features.state_dict()
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    ext = FeatureExtractor("vgg16", ["relu2_2"], weights=str(path))
    assert not ext.random_weights and ext.weights_label == "file:vgg16.pth"
    torch.testing.assert_close(ext.body[0].weight, model.features[0].weight)
    expected = model.features[:9](
        (images - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    )
    torch.testing.assert_close(ext(images)["relu2_2"], expected)


def test_file_for_wrong_arch_is_clear(tmp_path):
    path = tmp_path / "vgg19.pth"
    torch.save(torchvision.models.vgg19().features.state_dict(), path)
    with pytest.raises(WeightsError, match="do not fit vgg16: parameter features.17.weight .* seem to be for vgg19$"):
        FeatureExtractor("vgg16", ["relu1_2"], weights=str(path))


def test_missing_or_garbage_file(tmp_path):
    with pytest.raises(WeightsError, match="no such file"):
        FeatureExtractor("vgg16", ["relu1_1"], weights=str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="could not be read"):
        FeatureExtractor("vgg16", ["relu1_1"], weights=str(bad))


def test_imagenet_offline_fails_fast_with_both_ways_out(monkeypatch, tmp_path):
    import time
    import urllib.error

    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached file

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    start = time.monotonic()
    with pytest.raises(WeightsError, match=r"vgg16-397923af\.pth.*weights=random"):
        FeatureExtractor("vgg16", ["relu2_2"], weights="imagenet")
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("arch", ["vgg11", "vgg13_bn", "vgg19"])
def test_own_vgg_builder_matches_torchvision(arch):
    from layersearch.lossnet.nets.vgg import vgg_features

    ours = vgg_features(arch)
    with torch.device("meta"):
        theirs = torchvision.models.get_model(arch).features
    assert [type(m) for m in ours] == [type(m) for m in theirs]
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }
    # torchvision's init: kaiming normal, fan_out, so std = sqrt(2 / (out_channels * 9)).
    std = [m for m in ours if isinstance(m, torch.nn.Conv2d)][-1].weight.std().item()
    assert abs(std - (2 / (512 * 9)) ** 0.5) < 0.002


def test_weights_are_read_once_per_process_and_shared(tmp_path, monkeypatch):
    import layersearch.lossnet.weights as weights_module

    path = tmp_path / "vgg16.pth"
    torch.save(torchvision.models.vgg16().features.state_dict(), path)
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))
    a = FeatureExtractor("vgg16", ["relu2_2"], weights=str(path))
    b = FeatureExtractor("vgg16", ["relu1_2", "relu3_3"], weights=str(path))
    assert len(reads) == 1
    # Frozen tensors are shared, not copied: a sweep holds one loss network whatever its trial count.
    assert a.body[0].weight.data_ptr() == b.body[0].weight.data_ptr()
    assert not a.body[0].weight.requires_grad
    # A file rewritten while the process runs is read again.
    torch.save(torchvision.models.vgg16().features.state_dict(), path)
    c = FeatureExtractor("vgg16", ["relu2_2"], weights=str(path))
    assert len(reads) == 2 and c.body[0].weight.data_ptr() != a.body[0].weight.data_ptr()
    weights_module.clear_shared()
    FeatureExtractor("vgg16", ["relu2_2"], weights=str(path))
    assert len(reads) == 3


def test_random_weights_are_shared_per_seed_and_equal_a_fresh_init(images):
    with pytest.warns(RandomWeightsWarning):
        shallow = FeatureExtractor("vgg16", ["relu1_2"], weights="random", seed=5)
        deep = FeatureExtractor("vgg16", ["relu4_3"], weights="random", seed=5)
        other = FeatureExtractor("vgg16", ["relu1_2"], weights="random", seed=6)
    assert shallow.body[0].weight.data_ptr() == deep.body[0].weight.data_ptr()
    assert not torch.equal(shallow.body[0].weight, other.body[0].weight)
    # The shared init equals what a network truncated at relu1_2 gets on its own under the same seed.
    from layersearch.lossnet.nets.vgg import vgg_features

    torch.manual_seed(5)
    fresh = vgg_features("vgg16", upto=3)
    torch.testing.assert_close(shallow.body[2].weight, fresh[2].weight)


def test_a_subset_of_layers_stops_early_and_matches(images):
    with pytest.warns(RandomWeightsWarning):
        ext = FeatureExtractor("vgg16", ["relu1_2", "relu3_3"], weights="random")
    full = ext(images)
    part = ext(images, ["relu1_2"])
    assert list(part) == ["relu1_2"]
    torch.testing.assert_close(part["relu1_2"], full["relu1_2"])
    with pytest.raises(ValueError, match="relu2_2"):
        ext(images, ["relu2_2"])


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_gradient_comes_back_in_the_inputs_layout(images, layout):
    # The network runs channels_last; an NCHW generator would be ~1.8x slower backwards on a channels_last grad.
    with pytest.warns(RandomWeightsWarning):
        ext = FeatureExtractor("vgg16", ["relu2_2"], weights="random")
    x = images.contiguous(memory_format=layout).requires_grad_(True)
    ext(x)["relu2_2"].sum().backward()
    assert x.grad.is_contiguous(memory_format=layout)
