"""The metric registry: one entry per metric (direction, format, computation, needs), and adding a metric is
one `register` call that `layersearch score`, `Trial.score`, the tasks, the objective directions and the tables
then use. Random LPIPS weights only; nothing is downloaded."""

from __future__ import annotations

import types
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import smoke
from PIL import Image

from layersearch.config import load_settings
from layersearch.lossnet.weights import RandomWeightsWarning
from layersearch.settings import LpipsSettings
from layersearch.trial.handle import Trial, score_images
from layersearch.trial.metric_registry import (
    DEFAULT_METRIC_FORMAT,
    LPIPS_NETS,
    METRIC_DIRECTIONS,
    METRICS,
    RESTORATION,
    STYLE,
    Metric,
    MetricContext,
    compute_metrics,
    format_metric,
    format_table,
    get_metric,
    lpips_graded,
    metric_format,
    metric_names,
    register,
    restoration_metrics,
    self_graded_archs,
    unregister,
)
from layersearch.trial.metrics import LPIPSMetric, psnr_y, ssim_y, style_distance
from layersearch.trial.tasks import StyleTransfer, SuperResolution, build_task


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def lpips_net() -> LPIPSMetric:
    with pytest.warns(RandomWeightsWarning):
        return LPIPSMetric(net="squeeze", weights="random")


# --- the built-in entries -----------------------------------------------------------------------------------


def test_every_entry_has_its_direction_format_needs_and_set():
    expected = {  # name: (direction, format, needs, set)
        "lpips": ("minimize", "#.4g", ("lpips",), RESTORATION),
        "psnr_y": ("maximize", ".2f", (), RESTORATION),
        "ssim_y": ("maximize", ".4f", (), RESTORATION),
        "content_lpips": ("minimize", "#.4g", ("lpips",), STYLE),
        "style_distance": ("minimize", "#.4g", ("lpips", "style_image"), STYLE),
        **{name: ("maximize", ".4f", (), RESTORATION) for name in ("haarpsi", "dss", "vsi", "ms_ssim")},
    }
    assert list(METRICS) == list(expected)  # registration order: the order every table and message uses
    for name, (direction, fmt, needs, task) in expected.items():
        metric = get_metric(name)
        assert (metric.name, metric.direction, metric.fmt, metric.needs, metric.task) == (name, direction, fmt,
                                                                                        needs, task)
        assert METRIC_DIRECTIONS[name] == direction
        assert metric_format(name) == fmt
    assert dict(METRIC_DIRECTIONS) == {n: d for n, (d, *_) in expected.items()}
    assert restoration_metrics() == ("lpips", "psnr_y", "ssim_y", "haarpsi", "dss", "vsi", "ms_ssim") == metric_names(
        RESTORATION)
    assert metric_names(STYLE) == ("content_lpips", "style_distance")
    assert SuperResolution.metrics == restoration_metrics() and StyleTransfer.metrics == metric_names(STYLE)


def test_each_computation_equals_the_convention_function(lpips_net):
    pred, target, style = _rand(2, 3, 40, 40, seed=1), _rand(2, 3, 40, 40, seed=2), _rand(1, 3, 32, 32, seed=3)
    ctx = MetricContext(scale=4, lpips=lpips_net, style_image=style)
    expected = {
        "lpips": lpips_net(pred, target),
        "psnr_y": psnr_y(pred, target, 4),
        "ssim_y": ssim_y(pred, target, 4),
        "content_lpips": lpips_net(pred, target),
        "style_distance": style_distance(lpips_net, pred, style),
    }
    got = compute_metrics(list(expected), pred, target, ctx)  # the piq ones: tests/trial/test_piq_metrics.py
    assert list(got) == list(expected)
    for name, values in expected.items():
        assert got[name].shape == (2,)
        assert torch.equal(got[name], values), name
    # The validation-set path (target features cached) gives the task's values.
    cached = get_metric("lpips").compute(pred, target, MetricContext(lpips=lpips_net, cache_target=True))
    assert torch.equal(cached, lpips_net(pred, target, cache_target=True))


def test_a_missing_need_is_named():
    with pytest.raises(ValueError, match="metric lpips needs lpips"):
        get_metric("lpips").compute(_rand(1, 3, 16, 16), _rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="metric style_distance needs style_image"):
        get_metric("style_distance").compute(_rand(1, 3, 16, 16), _rand(1, 3, 16, 16),
                                             MetricContext(lpips=object()))  # type: ignore[arg-type]


def test_entries_are_checked_and_names_are_unique():
    def fn(o, t, ctx):
        return o.mean(dim=(1, 2, 3))

    with pytest.raises(ValueError, match="minimize or maximize"):
        Metric("m", "lower", ".2f", fn)
    with pytest.raises(ValueError, match="unknown need 'gpu'"):
        Metric("m", "minimize", ".2f", fn, needs=("gpu",))
    with pytest.raises(ValueError):
        Metric("m", "minimize", "not a format", fn)
    with pytest.raises(ValueError, match="'psnr_y' is already registered"):
        register(Metric("psnr_y", "maximize", ".2f", fn))
    with pytest.raises(KeyError, match="unknown metric 'nope'; known: lpips, psnr_y"):
        get_metric("nope")


def test_lpips_backbone_map_and_the_self_graded_check():
    assert LPIPS_NETS == {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}
    assert self_graded_archs(["vgg16", "alexnet"], "alex") == ["alexnet"]
    assert self_graded_archs(["vgg16"], "alex") == []
    assert self_graded_archs(["vgg16"], "nonsense") == []
    assert lpips_graded(["psnr_y", "style_distance", "mine", "lpips"]) == ["style_distance", "lpips"]


def test_unregistered_names_print_as_before():
    # Prefixed columns print like the metric they name; anything else has four significant digits.
    assert format_metric("feature psnr_y", 18.5) == "18.50"
    assert format_metric("val_psnr", 18.5) == "18.50"
    assert format_metric("val_ssim", 0.81234) == "0.8123"
    assert format_metric("val_lpips", 0.0085123) == "0.008512"
    assert metric_format("my_metric") == DEFAULT_METRIC_FORMAT == "#.4g"


# --- adding a metric is one entry -------------------------------------------------------------------------


def _mae(outputs: torch.Tensor, targets: torch.Tensor, ctx: MetricContext) -> torch.Tensor:
    from layersearch.trial.metrics import shave

    return (shave(outputs, ctx.scale) - shave(targets, ctx.scale)).abs().double().mean(dim=(1, 2, 3))


@pytest.fixture
def toy_mae():
    """A metric layersearch does not ship, registered for the test only."""
    metric = register(Metric("toy_mae", "minimize", ".3f", _mae))
    try:
        yield metric
    finally:
        unregister("toy_mae")
    assert "toy_mae" not in METRICS


def test_a_registered_metric_is_scored_by_score_and_trial_score(toy_mae, tmp_path):
    pred, target = _rand(2, 3, 40, 40, seed=4), _rand(2, 3, 40, 40, seed=5)
    expected = float(_mae(pred, target, MetricContext(scale=2)).mean())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        scores = score_images(pred, target, 2, "squeeze", "random")
        trial = Trial(number=0, study_name="s", params={}, layer_config={}, steps=1, seed=0, device="cpu",
                      dir=tmp_path, objectives=["toy_mae"], lpips=LpipsSettings(net="squeeze", weights="random"))
        from_trial = trial.score(pred, target, scale=2)
    # A default metric (no need, default=True) is reported with no other change; a trial whose objectives do
    # not name lpips computes no LPIPS.
    assert list(scores) == ["lpips", "psnr_y", "ssim_y", "toy_mae"]
    assert scores["toy_mae"] == pytest.approx(expected, rel=1e-12)
    assert list(from_trial) == ["toy_mae", "psnr_y", "ssim_y"]
    assert from_trial == {k: scores[k] for k in from_trial}
    assert restoration_metrics()[-1] == "toy_mae" and "toy_mae" not in metric_names(STYLE)


def test_a_registered_metric_is_printed_by_layersearch_score(toy_mae, tmp_path, monkeypatch, capsys):
    from layersearch.cli import main

    monkeypatch.chdir(tmp_path)
    for folder, seed in (("pred", 1), ("target", 2)):
        (tmp_path / folder).mkdir()
        pixels = (np.random.default_rng(seed).random((40, 40, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / folder / "a.png")
    assert main(["score", "preset=smoke", "pred_dir=pred", "target_dir=target", "scale=0", "out_dir=out"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("run "))
    header, row = lines[at], lines[at + 1]
    assert header.split() == ["run", "lpips", "psnr_y", "ssim_y", "toy_mae"]
    assert len(row.split()[-1].split(".")[1]) == 3  # its own format, .3f


def test_a_registered_metric_is_an_objective_with_its_direction(toy_mae):
    from layersearch.search.loop import resolve_objectives

    study = load_settings([]).study
    user = types.SimpleNamespace(kind="python")
    assert resolve_objectives(replace(study, objectives=("toy_mae", "psnr_y")), user) == [("toy_mae", "minimize"),
                                                                                ("psnr_y", "maximize")]
    builtin = types.SimpleNamespace(kind="builtin", metrics=SuperResolution.metrics, default_objectives=("lpips",))
    assert resolve_objectives(replace(study, objectives=("toy_mae",)), builtin) == [("toy_mae", "minimize")]
    assert format_metric("toy_mae", 0.12345) == "0.123"
    assert format_table({"a": {"toy_mae": 0.5}}, ["toy_mae"]).splitlines()[1].split() == ["a", "0.500"]


def test_a_registered_metric_is_reported_by_the_built_in_task(toy_mae):
    cfg = smoke("task=sr_x4")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        task = build_task(cfg.task, cfg.data, cfg.model, cfg.metrics, "cpu")
    baseline = task.baseline()
    assert list(baseline) == ["lpips", "psnr_y", "ssim_y", "toy_mae"]
    bicubic = [task.bicubic(lr) for lr in task.val_lr]
    per_image = torch.cat([_mae(sr, hr, MetricContext(scale=task.scale))
                           for sr, hr in zip(bicubic, task.val_hr, strict=True)])
    assert baseline["toy_mae"] == pytest.approx(float(per_image.mean()), rel=1e-12)
