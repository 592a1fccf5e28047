from __future__ import annotations

import json

import pytest
import torch
import yaml

from layersearch import ConfigError, LossConfig, PerceptualLoss, gram_matrix

BASE = {"loss_net": {"arch": "vgg16", "weights": "random"}, "content_layers": {"relu2_2": 1.0}}


def config(**changes):
    return {**BASE, **changes}


def test_identical_images_give_zero(images):
    loss_fn = PerceptualLoss.from_config(
        config(style_layers={"relu1_2": 1.0, "relu3_3": 0.5}, style_weight=10.0, pixel_weight=1.0)
    )
    assert loss_fn(images, images).item() == 0.0
    assert set(loss_fn.last_terms) == {"pixel", "content/relu2_2", "style/relu1_2", "style/relu3_3", "total"}


def test_content_term_is_mean_over_chw(images):
    loss_fn = PerceptualLoss.from_config(config(content_weight=2.0))
    other = images.flip(-1)
    feats = loss_fn.extractor(images)["relu2_2"], loss_fn.extractor(other)["relu2_2"]
    expected = (feats[0] - feats[1]).pow(2).sum() / feats[0].numel()
    torch.testing.assert_close(loss_fn(other, images), 2.0 * expected)


def test_gram_normalisation_by_hand():
    feats = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    gram = gram_matrix(feats)
    f0 = feats[0].reshape(3, 4)
    by_hand = torch.tensor([[sum(f0[i, k] * f0[j, k] for k in range(4)) for j in range(3)] for i in range(3)])
    torch.testing.assert_close(gram[0], by_hand / (3 * 2 * 2))
    assert gram.shape == (2, 3, 3)


def test_style_term_is_squared_frobenius_of_grams(images):
    loss_fn = PerceptualLoss.from_config(config(content_layers={}, style_layers={"relu1_2": 1.0}, style_weight=3.0))
    other = images.roll(5, dims=-1) * 0.5
    f_out = loss_fn.extractor(other)["relu1_2"]
    f_tgt = loss_fn.extractor(images)["relu1_2"]
    expected = (gram_matrix(f_out) - gram_matrix(f_tgt)).pow(2).sum(dim=(1, 2)).mean()
    torch.testing.assert_close(loss_fn(other, images), 3.0 * expected)


def test_fixed_style_target_is_used(images):
    loss_fn = PerceptualLoss.from_config(config(style_layers={"relu2_1": 1.0}, style_weight=1.0))
    style = torch.rand(1, 3, 48, 48)
    loss_fn.set_style_target(style)
    loss_fn(images, images)
    # Output equals the content target, so the only non-zero term is the distance to the fixed style.
    assert loss_fn.last_terms["content/relu2_2"] == 0
    assert loss_fn.last_terms["style/relu2_1"] > 0
    per_call = PerceptualLoss.from_config(config(style_layers={"relu2_1": 1.0}, style_weight=1.0))
    per_call(images, images, style_target=style)
    torch.testing.assert_close(per_call.last_terms["style/relu2_1"], loss_fn.last_terms["style/relu2_1"])


def test_fixed_style_targets_move_with_the_module(images):
    # A library user fixes the style on the CPU, then calls .to("cuda"): the Gram targets must follow.
    loss_fn = PerceptualLoss.from_config(config(style_layers={"relu1_2": 1.0, "relu2_1": 0.5}, style_weight=1.0))
    loss_fn.set_style_target(torch.rand(1, 3, 32, 32))
    grams = {name: t.clone() for name, t in loss_fn.named_buffers() if name.startswith("fixed_gram")}
    assert len(grams) == 2 and all(t.dtype == torch.float32 for t in grams.values())
    assert not any(k.startswith("fixed_gram") for k in loss_fn.state_dict())  # targets, not weights to save
    loss_fn.to(torch.float64)
    moved = dict(loss_fn.named_buffers())
    for name, before in grams.items():
        assert moved[name].dtype == torch.float64
        torch.testing.assert_close(moved[name].float(), before)
    assert {loss_fn._fixed_grams[k].dtype for k in ("relu1_2", "relu2_1")} == {torch.float64}
    loss_fn.to("meta")
    assert {t.device.type for name, t in loss_fn.named_buffers() if name.startswith("fixed_gram")} == {"meta"}
    loss_fn.set_style_target(None)  # unset: the buffers go
    assert not any(name.startswith("fixed_gram") for name, _ in loss_fn.named_buffers())
    assert loss_fn._fixed_grams is None


def test_one_extractor_pass_for_content_and_style(images):
    loss_fn = PerceptualLoss.from_config(config(style_layers={"relu3_1": 1.0}, style_weight=1.0))
    calls = []
    loss_fn.extractor.register_forward_hook(lambda *a: calls.append(1))
    loss_fn(images, images.flip(-1))
    assert len(calls) == 2  # output once, target once


def test_gradients_reach_output_not_loss_net(images):
    loss_fn = PerceptualLoss.from_config(config(tv_weight=0.1, criterion="l1"))
    out = images.flip(-2).requires_grad_(True)
    loss_fn(out, images).backward()
    assert out.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss_fn.parameters())


def test_pixel_only_needs_no_loss_net(images):
    loss_fn = PerceptualLoss.from_config({"content_layers": {}, "pixel_weight": 1.0})
    assert loss_fn.extractor is None
    torch.testing.assert_close(loss_fn(images * 0.5, images), ((images * 0.5 - images) ** 2).mean())


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip_through_file(tmp_path, images, suffix):
    original = LossConfig.from_mapping(
        config(style_layers={"relu3_3": 0.25}, style_weight=5.0, tv_weight=1e-4, criterion="l1",
               provenance={"study": "s1"})
    )
    path = tmp_path / f"best{suffix}"
    data = original.to_dict()
    path.write_text(json.dumps(data) if suffix == ".json" else yaml.safe_dump(data))
    loaded = LossConfig.load(path)
    assert loaded == original
    a, b = PerceptualLoss.from_config(path), PerceptualLoss.from_config(original)
    torch.testing.assert_close(a(images.flip(-1), images), b(images.flip(-1), images))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"content_layers": {"relu9_1": 1.0}}, r"unknown layer 'relu9_1'.*valid names: conv1_1"),
        ({"content_layers": {"relu5_4": 1.0}}, r"relu5_4.*exists in vgg19"),
        ({"content_layers": {"relu2_2": -1.0}}, r"content_layers.relu2_2 must be >= 0"),
        ({"style_weight": -0.5}, r"style_weight must be >= 0"),
        ({"content_layers": {}}, r"nothing to optimise"),
        ({"content_layers": {"relu2_2": 1.0}, "content_weight": 0.0}, r"nothing to optimise"),
        ({"criterion": "huber"}, r"unknown criterion 'huber'; choose one of: mse, l1"),
        ({"loss_net": {"arch": "resnet34"}}, r"loss_net.arch: unknown loss network architecture 'resnet34'"),
        ({"content_layer": {"relu2_2": 1.0}}, r"unknown key\(s\) content_layer"),
        ({"content_layers": ["relu2_2"]}, r"content_layers must map layer names to weights"),
        ({"pixel_weight": "a lot"}, r"pixel_weight must be a finite number"),
    ],
)
def test_bad_config_is_one_clear_error(changes, message):
    with pytest.raises(ConfigError, match=message):
        PerceptualLoss.from_config(config(**changes))


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        LossConfig.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("content_layers: {relu2_2: [")
    with pytest.raises(ConfigError, match="could not be parsed"):
        LossConfig.load(bad)
