"""Tasks composed from the real conf/ (preset=smoke, random weights): batches, learning, metric conventions."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from helpers import smoke
from torch import nn

from layersearch.errors import ConfigValueError
from layersearch.lossnet.loss import PerceptualLoss
from layersearch.lossnet.weights import RandomWeightsWarning
from layersearch.settings import Settings
from layersearch.trial.data import DataError
from layersearch.trial.metrics import PSNR_CAP_DB
from layersearch.trial.tasks import (
    TRIALS_PER_DEVICE_ENV,
    StyleTransfer,
    SuperResolution,
    _move_images,
    build_task,
    keep_on_device,
    trials_sharing_device,
)
from layersearch.trial.train import layer_config
from layersearch.trial.transforms import degrade


def make_task(cfg: Settings):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return build_task(cfg.task, cfg.data, cfg.model, cfg.metrics, "cpu")


@pytest.fixture(scope="module")
def sr_task() -> SuperResolution:
    return make_task(smoke("task=sr_x4"))


@pytest.fixture(scope="module")
def style_task() -> StyleTransfer:
    return make_task(smoke("task=style", "loss=johnson_style"))


class Oracle(nn.Module):
    """Returns the stored answer for each known input: a 'perfect' generator for metric checks."""

    def __init__(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]):
        super().__init__()
        self.pairs = pairs
        self.anchor = nn.Parameter(torch.zeros(()))  # so .train()/.eval()/.parameters() behave like a model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for inp, out in self.pairs:
            if inp.shape == x.shape and torch.equal(inp, x):
                return out.clone()
        raise AssertionError(f"unexpected input of shape {tuple(x.shape)}")


class Bicubic(nn.Module):
    def __init__(self, task: SuperResolution):
        super().__init__()
        self.task = task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.task.bicubic(x)


# --- learning: the loss falls on a fixed batch ----------------------------------------------------------


@pytest.mark.parametrize(
    "overrides", [("task=sr_x4",), ("task=style", "loss=johnson_style")], ids=["sr_x4", "style"]
)
def test_loss_falls_on_a_fixed_batch(overrides):
    cfg = smoke(*overrides)
    task = make_task(cfg)
    torch.manual_seed(0)
    model = task.build_generator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        loss_fn = PerceptualLoss(layer_config(cfg)).to(task.device)
    task.setup_loss(loss_fn)
    inputs, targets = task.sample_batch(2, torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        loss = task.loss(loss_fn, model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses
    # Not just noise: the last steps are lower than the first on average.
    assert sum(losses[-3:]) < sum(losses[:3]), losses


def test_style_loss_uses_the_fixed_style_grams(style_task):
    cfg = smoke("task=style", "loss=johnson_style")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        loss_fn = PerceptualLoss(layer_config(cfg))
    style_task.setup_loss(loss_fn)
    content, target = style_task.sample_batch(2, torch.Generator().manual_seed(0))
    assert torch.equal(content, target)  # style transfer reconstructs content; the style comes from the Grams
    loss_fn(content, target)
    # The output equals the content, so content terms vanish and only the style (and TV) terms remain.
    assert all(v.item() == 0 for k, v in loss_fn.last_terms.items() if k.startswith("content/"))
    assert all(v.item() > 0 for k, v in loss_fn.last_terms.items() if k.startswith("style/"))


# --- batches --------------------------------------------------------------------------------------------


def test_sr_batches_are_degraded_crops_and_repeatable(sr_task):
    cfg = smoke("task=sr_x4")
    crop, scale = cfg.task.params["crop"], cfg.task.params["scale"]
    lr, hr = sr_task.sample_batch(3, torch.Generator().manual_seed(5))
    assert hr.shape == (3, 3, crop, crop)
    assert lr.shape == (3, 3, crop // scale, crop // scale)
    assert torch.equal(lr, degrade(hr, scale, cfg.task.params["blur_sigma"]))
    lr2, hr2 = sr_task.sample_batch(3, torch.Generator().manual_seed(5))
    assert torch.equal(hr, hr2) and torch.equal(lr, lr2)
    _, hr3 = sr_task.sample_batch(3, torch.Generator().manual_seed(6))
    assert not torch.equal(hr, hr3)


def test_generators_map_shapes(sr_task, style_task):
    lr, hr = sr_task.sample_batch(2, torch.Generator().manual_seed(0))
    assert sr_task.build_generator()(lr).shape == hr.shape
    content, _ = style_task.sample_batch(2, torch.Generator().manual_seed(0))
    assert style_task.build_generator()(content).shape == content.shape


# --- metric conventions ---------------------------------------------------------------------------------


def test_sr_baseline_is_bicubic_and_reports_every_metric(sr_task):
    base = sr_task.baseline()
    assert set(base) == {"lpips", "psnr_y", "ssim_y"}
    assert all(math.isfinite(v) for v in base.values())
    assert 0 < base["psnr_y"] < PSNR_CAP_DB and 0 < base["ssim_y"] < 1 and base["lpips"] > 0
    # The baseline row is exactly what evaluate() gives a generator that does bicubic upsampling.
    assert sr_task.evaluate(Bicubic(sr_task)) == pytest.approx(base, rel=1e-9, abs=1e-9)
    assert sr_task.baseline() is not sr_task.baseline()  # callers get copies of the cached row


def test_style_has_no_baseline(style_task):
    assert style_task.baseline() is None


def test_perfect_sr_output_scores_lpips_0_ssim_1_psnr_cap(sr_task):
    oracle = Oracle(list(zip(sr_task.val_lr, sr_task.val_hr, strict=True)))
    scores = sr_task.evaluate(oracle)
    assert set(scores) == set(sr_task.objectives) | {"ssim_y"}
    assert scores["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert scores["ssim_y"] == pytest.approx(1.0, abs=1e-12)
    assert scores["psnr_y"] == PSNR_CAP_DB


def test_identity_style_output_has_zero_content_lpips(style_task):
    scores = style_task.evaluate(nn.Identity())
    assert set(scores) == {"content_lpips", "style_distance"} == set(style_task.objectives)
    assert scores["content_lpips"] == pytest.approx(0.0, abs=1e-6)
    assert scores["style_distance"] > 0


@pytest.mark.parametrize("val_crop", [None, 62])
def test_sr_validation_hr_is_a_multiple_of_scale(val_crop):
    cfg = smoke("task=sr_x4", f"task.val_crop={'null' if val_crop is None else val_crop}")
    task = make_task(cfg)
    scale = task.scale
    assert task.val_hr, "no validation images"
    n_images = sum(hr.shape[0] for hr in task.val_hr)
    assert n_images == len(task.val_names)
    for hr, lr in zip(task.val_hr, task.val_lr, strict=True):
        h, w = hr.shape[-2:]
        assert h % scale == 0 and w % scale == 0
        assert lr.shape[-2:] == (h // scale, w // scale)
        if val_crop is not None:
            assert (h, w) == (60, 60)
    scores = task.evaluate(Bicubic(task))  # whole images of different sizes evaluate one batch per size
    assert all(math.isfinite(v) for v in scores.values())


def test_sr_crop_must_be_a_multiple_of_scale():
    with pytest.raises(ValueError, match="multiple of task.scale"):
        make_task(smoke("task=sr_x4", "task.crop=30"))


def test_preview_rows(sr_task, style_task):
    torch.manual_seed(0)
    titles, rows = sr_task.preview(sr_task.build_generator(), 2)
    assert titles == ["bicubic input", "output", "target"]
    assert len(rows) == 2
    for row in rows:
        assert len(row) == 3 and all(img.ndim == 3 and img.shape[0] == 3 for img in row)
        assert row[0].shape == row[1].shape == row[2].shape
        assert all(0 <= img.min() and img.max() <= 1 for img in row)
    titles, rows = style_task.preview(style_task.build_generator(), 1)
    assert titles == ["content", "output", "style"] and len(rows) == 1


# --- where the training images live (data.on_device) --------------------------------------------------------


def test_keep_on_device_rule(monkeypatch):
    class Properties:
        total_memory = 80 * 2**30

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: Properties())
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    assert keep_on_device("auto", 50 * 2**20, gpu)  # the sample photos
    assert not keep_on_device("auto", 27 * 2**30, gpu)  # DIV2K's training split as float32
    assert keep_on_device("auto", 7 * 2**30, gpu, sharing=1)  # under a tenth of 80 GiB...
    assert not keep_on_device("auto", 7 * 2**30, gpu, sharing=2)  # ...but not twice over (trials_per_device=2)
    assert keep_on_device(None, 27 * 2**30, cpu)  # on the CPU the images are in host memory anyway
    assert keep_on_device(True, 27 * 2**30, gpu) and not keep_on_device(False, 1, gpu)  # the user decides
    with pytest.raises(ConfigValueError, match="data.on_device must be auto, true or false, got 'yes'"):
        keep_on_device("yes", 1, gpu)


def test_the_launcher_tells_how_many_trials_share_the_device(monkeypatch):
    monkeypatch.delenv(TRIALS_PER_DEVICE_ENV, raising=False)
    assert trials_sharing_device() == 1
    monkeypatch.setenv(TRIALS_PER_DEVICE_ENV, "4")
    assert trials_sharing_device() == 4
    monkeypatch.setenv(TRIALS_PER_DEVICE_ENV, "four")
    assert trials_sharing_device() == 1


def test_images_kept_off_the_device_give_the_same_batches(sr_task):
    # data.on_device=false: the images stay in host memory and each batch is cut there (then copied to a GPU).
    off = make_task(smoke("task=sr_x4", "data.on_device=false"))
    assert sr_task.train_on_device and not off.train_on_device
    for seed in (0, 1):
        on_batch = sr_task.sample_batch(3, torch.Generator().manual_seed(seed))
        off_batch = off.sample_batch(3, torch.Generator().manual_seed(seed))
        for a, b in zip(on_batch, off_batch, strict=True):
            assert a.device == b.device == torch.device("cpu")
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_bad_on_device_value_is_one_line():
    with pytest.raises(ConfigValueError, match="data.on_device"):
        make_task(smoke("task=sr_x4", "data.on_device=sometimes"))


def test_images_that_do_not_fit_on_the_device_are_one_line():
    class TooBig:
        def to(self, device):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 26.00 GiB")

    with pytest.raises(DataError, match=r"the training images \(27.0 GiB as float32\) do not fit on cuda: "
                                        r"set data.on_device=false"):
        _move_images([TooBig()], torch.device("cuda"), 27 * 2**30)


def test_images_off_a_gpu_are_cut_in_host_memory_pinned_and_copied_asynchronously(monkeypatch):
    # No GPU here: the task believes it runs on one, and pin_memory / .to only record what they were asked.
    task = make_task(smoke("task=sr_x4", "data.on_device=false"))
    calls = []
    monkeypatch.setattr(task, "device", torch.device("cuda"))
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append(("pin", self.device.type)) or self)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, device, non_blocking=False: calls.append(
        ("to", str(device), non_blocking, tuple(self.shape))) or self)
    task.sample_batch(3, torch.Generator().manual_seed(0))
    crop = task.crop
    assert calls == [("pin", "cpu"), ("to", "cuda", True, (3, 3, crop, crop))]  # one batch copied, not the images
