"""piq's weight-free perceptual metrics (haarpsi, dss, vsi, ms_ssim): each equals piq's own function under the
stated convention, is computed only when asked for, and a run scored by them loads no LPIPS network."""

from __future__ import annotations

import numpy as np
import piq
import pytest
import torch
import torch.nn.functional as F
from helpers import smoke
from PIL import Image

from layersearch.errors import ConfigValueError
from layersearch.trial.data import sample_image
from layersearch.trial.handle import Trial, score_images
from layersearch.trial.metric_registry import (
    DEFAULT_OBJECTIVES,
    RESTORATION,
    STYLE,
    MetricContext,
    check_image_side,
    compute_metrics,
    get_metric,
    metric_set,
)
from layersearch.trial.metrics import PIQ_METRICS
from layersearch.trial.tasks import build_task

PIQ = {"haarpsi": piq.haarpsi, "dss": piq.dss, "vsi": piq.vsi, "ms_ssim": piq.multi_scale_ssim}


@pytest.fixture(scope="module")
def photos() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 184 px crops of scikit-image photos and a blurred, noisy copy of each (a restoration's output)."""
    targets = torch.stack([sample_image(name)[:, :184, :184] for name in ("chelsea", "coffee")])
    blurred = F.avg_pool2d(targets, 3, stride=1, padding=1, count_include_pad=False)
    noise = 0.03 * torch.randn(targets.shape, generator=torch.Generator().manual_seed(0))
    return (blurred + noise).clamp(0, 1), targets


def test_each_equals_piqs_function_on_the_shaved_images(photos):
    outputs, targets = photos
    got = compute_metrics(list(PIQ), outputs, targets, MetricContext(scale=4))
    for name, function in PIQ.items():
        expected = function(outputs[..., 4:-4, 4:-4], targets[..., 4:-4, 4:-4], data_range=1.0, reduction="none")
        assert got[name].shape == (2,)
        assert torch.equal(got[name], expected), name
        assert 0.3 < float(got[name].min()) < 1.0, name  # a degraded image: between unrelated and identical
    assert set(PIQ) == set(PIQ_METRICS)


def test_direction_format_and_identical_images(photos):
    _, targets = photos
    for name in PIQ:
        metric = get_metric(name)
        assert (metric.direction, metric.fmt, metric.task, metric.needs, metric.default) == (
            "maximize", ".4f", RESTORATION, (), False), name
        same = metric.compute(targets, targets.clone(), MetricContext(scale=4))
        assert torch.allclose(same, torch.ones(2), atol=1e-4), name


def test_image_sizes_below_a_metrics_minimum_are_refused_in_one_line():
    assert [get_metric(n).min_side for n in PIQ] == [16, 32, 1, 161]
    check_image_side(["ms_ssim"], 161, "crops")  # the minimum itself is fine
    with pytest.raises(ConfigValueError, match=r"^ms_ssim needs images of at least 161 px after the border shave; "
                                               r"crops are 160 px$"):
        check_image_side(["psnr_y", "ms_ssim"], 160, "crops")
    small = torch.rand(1, 3, 36, 36)  # 28 px after the 4 px shave
    with pytest.raises(ConfigValueError, match="dss needs images of at least 32 px"):
        score_images(small, small, scale=4, names=["dss"])
    with pytest.raises(ValueError, match="haarpsi needs images of at least 16 x 16 px after shaving 4 px"):
        get_metric("haarpsi").compute(small[..., :20, :20], small[..., :20, :20], MetricContext(scale=4))


def test_which_metrics_a_run_computes():
    # Default: the objectives first, then the free default metrics; LPIPS only as an objective or by name.
    assert metric_set(RESTORATION) == ("lpips", "psnr_y", "ssim_y")
    assert metric_set(RESTORATION, ["haarpsi", "psnr_y"]) == ("haarpsi", "psnr_y", "ssim_y")
    assert metric_set(RESTORATION, ["val_loss"]) == ("psnr_y", "ssim_y")  # a user's own objective is theirs
    assert metric_set(RESTORATION, None, ["vsi", "lpips"]) == ("lpips", "psnr_y", "vsi")
    assert metric_set(RESTORATION, ["haarpsi"], []) == ("haarpsi",)
    assert metric_set(STYLE) == DEFAULT_OBJECTIVES[STYLE]
    with pytest.raises(ConfigValueError, match="metrics.names: 'haarpsi' is not a style metric; choose from "
                                               "content_lpips, style_distance"):
        metric_set(STYLE, None, ["haarpsi"])


def test_a_task_scored_by_haarpsi_loads_no_lpips_and_reports_it():
    s = smoke("study.objectives=[haarpsi,psnr_y]", "task.val_crop=64")
    task = build_task(s.task, s.data, s.model, s.metrics, "cpu", s.study.objectives)
    assert task.lpips is None and task.reported == ("haarpsi", "psnr_y", "ssim_y")
    scores = task.evaluate(task.build_generator())
    assert list(scores) == ["haarpsi", "psnr_y", "ssim_y"] and 0 < scores["haarpsi"] < 1


def test_ms_ssim_on_crops_too_small_fails_when_the_task_is_built():
    s = smoke("metrics.names=[ms_ssim]", "task.val_crop=128")
    with pytest.raises(ConfigValueError, match=r"ms_ssim needs images of at least 161 px after the border shave; "
                                               r"the validation crops \(task.val_crop=128\) less the 4 px shave "
                                               r"are 120 px"):
        build_task(s.task, s.data, s.model, s.metrics, "cpu", s.study.objectives)


def test_trial_score_returns_the_objectives_and_the_named_metrics(photos, tmp_path):
    outputs, targets = photos
    trial = Trial(number=0, study_name="s", params={}, layer_config={}, steps=1, seed=0, device="cpu", dir=tmp_path,
                  objectives=["haarpsi", "psnr_y"], metric_names=["dss"])
    assert trial.scored == ("haarpsi", "psnr_y", "dss")
    scores = trial.score(outputs, targets, scale=4)  # lpips (imagenet weights, not installed) is never built
    assert list(scores) == ["haarpsi", "psnr_y", "dss"]
    expected = piq.dss(outputs[..., 4:-4, 4:-4], targets[..., 4:-4, 4:-4], data_range=1.0, reduction="none")
    assert scores["dss"] == pytest.approx(float(expected.mean()), rel=1e-6)


def test_layersearch_score_prints_the_piq_metrics_without_lpips(tmp_path, monkeypatch, capsys):
    from layersearch.cli import main

    monkeypatch.chdir(tmp_path)
    for folder, seed in (("pred", 1), ("target", 2)):
        (tmp_path / folder).mkdir()
        pixels = (np.random.default_rng(seed).random((48, 48, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / folder / "a.png")
    # The default LPIPS weights (imagenet) are not installed here: nothing may try to load them.
    assert main(["score", "pred_dir=pred", "target_dir=target", "scale=4", "out_dir=out",
                 "study.objectives=[haarpsi,psnr_y]", "metrics.names=[dss,vsi]"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("run "))
    assert header.split() == ["run", "haarpsi", "psnr_y", "dss", "vsi"]
    assert "LPIPS not used" in out and "RANDOM" not in out
