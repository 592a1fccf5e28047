"""Metric conventions: Y conversion, shaving, PSNR/SSIM against hand values and scikit-image, LPIPS with
random or local-file backbones, and the Gram style distance. Random weights only; nothing is downloaded."""

from __future__ import annotations

import functools
import math
import warnings

import lpips
import numpy as np
import pytest
import torch
import torchvision
from skimage.metrics import structural_similarity

from layersearch.lossnet.weights import RandomWeightsWarning, WeightsError
from layersearch.trial.metrics import (
    METRIC_DIRECTIONS,
    PIQ_METRICS,
    PSNR_CAP_DB,
    LPIPSMetric,
    piq_metric,
    psnr_y,
    rgb_to_y,
    shave,
    ssim_y,
    style_distance,
)

Y_SPAN = 65.481 + 128.553 + 24.966  # Y(white) - Y(black) = 219


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _const(value: float, n: int = 1, size: int = 16) -> torch.Tensor:
    return torch.full((n, 3, size, size), value, dtype=torch.float32)


@pytest.fixture(scope="module", params=["alex", "vgg", "squeeze"])
def random_metric(request) -> LPIPSMetric:
    # Module scope: building LPIPS-VGG costs seconds. The warning must still be raised for random weights.
    with pytest.warns(RandomWeightsWarning, match="RANDOM"):
        return LPIPSMetric(net=request.param, weights="random")


@pytest.fixture(scope="module")
def squeeze_metric() -> LPIPSMetric:
    with pytest.warns(RandomWeightsWarning):
        return LPIPSMetric(net="squeeze", weights="random")


def test_metric_directions_prefer_the_perfect_output(squeeze_metric: LPIPSMetric):
    # Each metric's direction must rank a perfect output above a noisy one; a wrong direction would make
    # every study search for the worst layers.
    target = _rand(2, 3, 32, 32, seed=1)
    noisy = (target + 0.2 * _rand(2, 3, 32, 32, seed=2) - 0.1).clamp(0, 1)
    style = _rand(1, 3, 32, 32, seed=3)
    score = {
        "lpips": lambda out: squeeze_metric(out, target),
        "content_lpips": lambda out: squeeze_metric(out, target),
        "psnr_y": lambda out: psnr_y(out, target, 4),
        "ssim_y": lambda out: ssim_y(out, target, 4),
        "style_distance": lambda out: style_distance(squeeze_metric, out, style),
    }
    perfect = {"style_distance": style.expand(2, -1, -1, -1)}
    # piq's metrics on images MS-SSIM accepts (161 px after the shave).
    big = _rand(2, 3, 176, 176, seed=4)
    big_noisy = (big + 0.2 * _rand(2, 3, 176, 176, seed=5) - 0.1).clamp(0, 1)
    noisy_of = {}
    for name in PIQ_METRICS:
        score[name] = functools.partial(piq_metric, name, target=big, border=4)
        perfect[name], noisy_of[name] = big, big_noisy
    assert set(score) == set(METRIC_DIRECTIONS)
    for name, direction in METRIC_DIRECTIONS.items():
        best = float(score[name](perfect.get(name, target)).mean())
        worse = float(score[name](noisy_of.get(name, noisy)).mean())
        assert (best < worse) if direction == "minimize" else (best > worse), (name, direction, best, worse)


@pytest.mark.parametrize(
    ("rgb", "y"),
    [
        ((0.0, 0.0, 0.0), 16.0),
        ((1.0, 1.0, 1.0), 235.0),
        ((1.0, 0.0, 0.0), 16.0 + 65.481),
        ((0.0, 1.0, 0.0), 16.0 + 128.553),
        ((0.0, 0.0, 1.0), 16.0 + 24.966),
        ((0.5, 0.5, 0.5), 16.0 + 0.5 * 219.0),
    ],
)
def test_rgb_to_y_hand_values(rgb, y):
    images = torch.tensor(rgb, dtype=torch.float64).view(1, 3, 1, 1).expand(2, 3, 4, 5)
    out = rgb_to_y(images)
    assert out.shape == (2, 1, 4, 5)
    torch.testing.assert_close(out, torch.full_like(out, y))


def test_shave():
    images = _rand(2, 1, 10, 12)
    assert shave(images, 0) is images
    torch.testing.assert_close(shave(images, 3), images[..., 3:7, 3:9])
    with pytest.raises(ValueError, match="border"):
        shave(images, 5)


def test_psnr_identical_is_capped():
    images = _rand(3, 3, 16, 16)
    out = psnr_y(images, images.clone(), border=2)
    assert out.shape == (3,)
    assert torch.equal(out, torch.full((3,), PSNR_CAP_DB, dtype=torch.float64))
    assert torch.isfinite(out).all()


def test_psnr_hand_computed():
    # A grey offset of d in RGB moves Y by 219 d everywhere: MSE = (219 d)^2 and PSNR = 20 log10(255 / (219 d)).
    target = _const(0.4, n=2)
    y_diffs = torch.tensor([10.0, 1.0])
    pred = target + (y_diffs / Y_SPAN).view(2, 1, 1, 1)
    out = psnr_y(pred, target, border=0)
    expected = torch.tensor([10 * math.log10(255.0**2 / d**2) for d in y_diffs.tolist()], dtype=torch.float64)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-4)
    assert out[0] == pytest.approx(28.1308, abs=1e-4)  # 10 log10(65025 / 100)


def test_psnr_shave_ignores_border():
    target = _rand(1, 3, 24, 24)
    pred = target.clone()
    pred[..., :2, :] = 1 - pred[..., :2, :]  # damage a 2-pixel strip on the top border
    pred[..., :, -1:] = 0.0  # and a 1-pixel strip on the right
    assert psnr_y(pred, target, border=2).item() == PSNR_CAP_DB
    assert psnr_y(pred, target, border=3).item() == PSNR_CAP_DB
    assert psnr_y(pred, target, border=1).item() < 40.0
    assert psnr_y(pred, target, border=0).item() < psnr_y(pred, target, border=1).item() + 1e-9


def test_psnr_clamps_but_does_not_quantise():
    target = _rand(2, 3, 16, 16)
    over = target.clone()
    over[0, :, 0, 0] = 1.7  # out of range: scored as it would be saved, i.e. clamped
    torch.testing.assert_close(psnr_y(over, target, 0), psnr_y(over.clamp(0, 1), target, 0))
    # A shift far below one grey level would vanish if images were rounded to uint8.
    tiny = psnr_y(target + 1e-4, target, 0)
    assert (tiny < PSNR_CAP_DB).all() and (tiny > 60).all()


def test_psnr_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="differ"):
        psnr_y(_rand(1, 3, 16, 16), _rand(1, 3, 16, 18), 0)


def test_ssim_identical_and_noisy():
    images = _rand(2, 3, 32, 32)
    same = ssim_y(images, images.clone(), border=4)
    assert same.shape == (2,)
    torch.testing.assert_close(same, torch.ones(2, dtype=torch.float64))
    noisy = (images + 0.6 * _rand(2, 3, 32, 32, seed=1) - 0.3).clamp(0, 1)
    scores = ssim_y(noisy, images, border=4)
    assert (scores < 0.95).all() and (scores > 0).all()


def test_ssim_matches_skimage_matlab_convention():
    target = _rand(1, 3, 40, 36, seed=2)
    pred = (target + 0.2 * _rand(1, 3, 40, 36, seed=3) - 0.1).clamp(0, 1)

    def y_numpy(images: torch.Tensor) -> np.ndarray:
        r, g, b = images[0].double().numpy()
        return (16 + 65.481 * r + 128.553 * g + 24.966 * b)[4:-4, 4:-4]

    expected = structural_similarity(
        y_numpy(pred),
        y_numpy(target),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
    )
    assert ssim_y(pred, target, border=4).item() == pytest.approx(expected, abs=1e-10)
    # The defaults (7x7 uniform window, sample covariance) give a different number: the convention matters.
    other = structural_similarity(y_numpy(pred), y_numpy(target), data_range=255)
    assert abs(other - expected) > 1e-4


def test_ssim_needs_an_11_pixel_window():
    with pytest.raises(ValueError, match="11 x 11"):
        ssim_y(_rand(1, 3, 16, 16), _rand(1, 3, 16, 16), border=3)  # 10 x 10 left
    assert ssim_y(_rand(1, 3, 17, 17), _rand(1, 3, 17, 17), border=3).shape == (1,)  # 11 x 11 left


def test_lpips_random_identical_and_different(random_metric: LPIPSMetric):
    x = _rand(2, 3, 32, 32)
    y = _rand(2, 3, 32, 32, seed=1)
    same = random_metric(x, x.clone())
    diff = random_metric(x, y)
    assert same.shape == diff.shape == (2,)
    torch.testing.assert_close(same, torch.zeros(2), rtol=0, atol=1e-6)
    assert (diff > 1e-4).all()
    assert random_metric.weights_label == "random"
    assert random_metric.random_weights is True


def test_lpips_backbone_features(random_metric: LPIPSMetric):
    feats = random_metric.backbone_features(_rand(2, 3, 32, 32))
    assert [f.shape[1] for f in feats] == random_metric.model.chns
    assert all(f.shape[0] == 2 for f in feats)


def test_lpips_is_frozen(squeeze_metric: LPIPSMetric):
    assert not any(p.requires_grad for p in squeeze_metric.parameters())
    squeeze_metric.train()
    assert not squeeze_metric.training and not squeeze_metric.model.training
    x = _rand(1, 3, 32, 32).requires_grad_(True)
    assert not squeeze_metric(x, _rand(1, 3, 32, 32, seed=1)).requires_grad


def test_lpips_maps_unit_range_to_minus_one_one():
    with pytest.warns(RandomWeightsWarning):
        metric = LPIPSMetric(net="alex", weights="random")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # lpips uses torchvision's deprecated pretrained=
        reference = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    reference.load_state_dict(metric.model.state_dict())
    x = _rand(2, 3, 32, 32)
    y = _rand(2, 3, 32, 32, seed=1)
    ours = metric(x, y)
    torch.testing.assert_close(ours, reference(x * 2 - 1, y * 2 - 1).flatten())
    assert not torch.allclose(ours, reference(x, y).flatten())  # unscaled inputs would score otherwise


def test_lpips_cached_target_features_give_the_same_scores_and_run_once(squeeze_metric: LPIPSMetric, monkeypatch):
    x, x2, y = _rand(2, 3, 32, 32), _rand(2, 3, 32, 32, seed=2), _rand(2, 3, 32, 32, seed=1)
    expected = [squeeze_metric(x, y), squeeze_metric(x2, y)]
    passes = []
    backbone = squeeze_metric.model.net.forward
    monkeypatch.setattr(squeeze_metric.model.net, "forward", lambda t: passes.append(1) or backbone(t))
    cached = [squeeze_metric(x, y, cache_target=True), squeeze_metric(x2, y, cache_target=True)]
    for ours, reference in zip(cached, expected, strict=True):
        torch.testing.assert_close(ours, reference)
    assert len(passes) == 3  # the target once, each prediction once
    y.mul_(0.5)  # an in-place change of the target invalidates its features
    torch.testing.assert_close(squeeze_metric(x, y, cache_target=True), squeeze_metric(x, y))


def test_lpips_keeps_calibrated_linear_heads(squeeze_metric: LPIPSMetric):
    shipped = torch.load(lpips.__path__[0] + "/weights/v0.1/squeeze.pth", map_location="cpu")
    state = squeeze_metric.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in shipped.items())


def test_lpips_seed_repeatable(squeeze_metric: LPIPSMetric):
    x, y = _rand(1, 3, 32, 32), _rand(1, 3, 32, 32, seed=1)
    with pytest.warns(RandomWeightsWarning):
        again = LPIPSMetric(net="squeeze", weights="random", seed=0)
        other = LPIPSMetric(net="squeeze", weights="random", seed=1)
    torch.testing.assert_close(again(x, y), squeeze_metric(x, y))
    assert not torch.allclose(other(x, y), squeeze_metric(x, y))


@pytest.fixture(scope="module")
def alexnet_model() -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        return torchvision.models.alexnet()


@pytest.mark.parametrize("features_only", [False, True])
def test_lpips_loads_local_file(tmp_path, alexnet_model: torch.nn.Module, features_only: bool):
    model = alexnet_model
    state = model.features.state_dict() if features_only else model.state_dict()
    path = tmp_path / "alexnet-local.pth"
    torch.save(state, path)
    metric = LPIPSMetric(net="alex", weights=str(path))
    assert metric.weights_label == "file:alexnet-local.pth"
    assert metric.random_weights is False
    trunk = metric.model.net
    for index, conv in [(0, trunk.slice1[0]), (3, trunk.slice2[1]), (10, trunk.slice5[0])]:
        assert torch.equal(conv.weight, model.features[index].weight)
        assert torch.equal(conv.bias, model.features[index].bias)
    assert not any(p.requires_grad for p in metric.parameters())


def test_lpips_rejects_file_for_another_architecture(tmp_path):
    path = tmp_path / "squeezenet.pth"
    torch.save(torchvision.models.squeezenet1_1().state_dict(), path)
    with pytest.raises(WeightsError, match=r"alexnet: parameter features\.0\.weight"):
        LPIPSMetric(net="alex", weights=str(path))


def test_lpips_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="no such file"):
        LPIPSMetric(net="alex", weights=str(tmp_path / "nope.pth"))


def test_lpips_bad_net_lists_choices():
    with pytest.raises(ValueError, match="alex, vgg, squeeze"):
        LPIPSMetric(net="resnet", weights="random")


def test_style_distance(squeeze_metric: LPIPSMetric):
    style = _rand(1, 3, 40, 40, seed=5)
    pred = torch.cat([style, _rand(2, 3, 40, 40, seed=6)])
    out = style_distance(squeeze_metric, pred, style)
    assert out.shape == (3,)
    assert out[0].item() == pytest.approx(0.0, abs=1e-10)
    assert (out[1:] > 0).all()
    # Grams are size-normalised, so a style image of another size still compares; a batch is refused.
    assert style_distance(squeeze_metric, pred[:1], _rand(1, 3, 48, 48, seed=5)).shape == (1,)
    with pytest.raises(ValueError, match="one image"):
        style_distance(squeeze_metric, pred, pred)
