"""The `Trial` handle's rules, which every kind of training meets: values, steps, pruning, scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layersearch import PerceptualLoss, Pruned, Trial, TrialFailed
from layersearch.settings import LpipsSettings
from layersearch.trial.handle import metric_value
from layersearch.trial.score import score_folders

LAYERS = {"loss_net": {"arch": "vgg16", "weights": "random"}, "content_layers": {"relu1_2": 1.0}}


def handle(tmp_path, reporter=None, objectives=("lpips",), **kwargs) -> Trial:
    return Trial(number=3, study_name="s", params={"use_relu1_2": True}, layer_config=LAYERS, steps=10, seed=1,
                 device="cpu", dir=tmp_path / "t3", objectives=objectives, reporter=reporter,
                 lpips=LpipsSettings(net="alex", weights="random"), **kwargs)


def test_values_are_converted_to_floats_and_must_be_finite():
    assert metric_value("lpips", torch.tensor(0.25)) == 0.25
    assert metric_value("psnr_y", np.float32(30.5)) == 30.5
    with pytest.raises(TrialFailed, match=r"metric 'lpips' is nan at step 7"):
        metric_value("lpips", float("nan"), 7)
    with pytest.raises(TrialFailed, match=r"metric 'psnr_y' is inf"):
        metric_value("psnr_y", torch.tensor(float("inf")))
    with pytest.raises(TrialFailed, match="must be a number"):
        metric_value("lpips", True)
    with pytest.raises(TrialFailed, match="must be a number"):
        metric_value("lpips", "0.2")
    with pytest.raises(TrialFailed, match="tensor of shape"):
        metric_value("lpips", torch.zeros(3))


def test_report_passes_floats_to_the_reporter_and_steps_must_increase(tmp_path):
    seen = []
    t = handle(tmp_path, reporter=lambda step, values: seen.append((step, values)))
    t.report(5, lpips=torch.tensor(0.5), loss=1)
    assert seen == [(5, {"lpips": 0.5, "loss": 1.0})]
    assert t.last_step == 5
    with pytest.raises(TrialFailed, match="steps must increase: step 5 after step 5"):
        t.report(5, lpips=0.4)
    with pytest.raises(TrialFailed, match="step 3 after step 5"):
        t.report(3, lpips=0.4)
    with pytest.raises(TrialFailed, match="whole number"):
        t.report(7.5, lpips=0.4)
    with pytest.raises(TrialFailed, match=r"'lpips' is nan at step 9"):
        t.report(9, lpips=float("nan"))
    assert len(seen) == 1  # nothing invalid reached the reporter


def test_pruning_raises_a_pruned_that_optuna_recognises_and_stays_decided(tmp_path):
    import optuna

    t = handle(tmp_path, reporter=lambda step, values: "lpips=0.9 at step 2 is worse than the median" if step == 2 else None)
    t.report(1, lpips=0.5)
    assert not t.should_prune()
    with pytest.raises(Pruned) as caught:
        t.report(2, lpips=0.9)
    assert isinstance(caught.value, optuna.TrialPruned)
    assert "worse than the median" in str(caught.value)
    assert t.should_prune() and t.prune_reason.startswith("lpips=0.9")


def test_loss_is_built_from_the_layer_config_on_first_use(tmp_path):
    t = handle(tmp_path)
    loss = t.loss
    assert isinstance(loss, PerceptualLoss) and loss is t.loss
    assert loss.config.content_layers == {"relu1_2": 1.0} and loss.random_weights
    out, target = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    assert float(loss(out, target)) > 0


def test_score_uses_the_protocol_of_layersearch_score(tmp_path):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    preds, targets = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    for folder, batch in (("pred", preds), ("target", targets)):
        (tmp_path / folder).mkdir()
        for i, img in enumerate(batch):
            array = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            Image.fromarray(array).save(tmp_path / folder / f"{i}.png")
    # Through 8-bit files as `layersearch score` reads them, so both sides see the same pixels.
    quantised = [torch.from_numpy(np.array(Image.open(tmp_path / f / f"{i}.png"))).permute(2, 0, 1).float() / 255
                 for f in ("pred", "target") for i in range(2)]
    scores = handle(tmp_path).score(torch.stack(quantised[:2]), torch.stack(quantised[2:]), scale=2)
    reference = score_folders(str(tmp_path / "pred"), str(tmp_path / "target"), 2, "alex", "random",
                              out=tmp_path / "scores.json")["mean"]
    assert scores.keys() == {"lpips", "psnr_y", "ssim_y"}
    for key in scores:
        assert scores[key] == pytest.approx(reference[key], rel=1e-6)
    # A list of differently sized pairs is scored pair by pair.
    mixed = handle(tmp_path).score([preds[0], preds[1, :, :48, :48]], [targets[0], targets[1, :, :48, :48]])
    assert set(mixed) == {"lpips", "psnr_y", "ssim_y"}


def test_score_keeps_the_values_per_image_and_a_complete_outcome_carries_them(tmp_path):
    from layersearch.trial.outcome import run_training

    g = torch.Generator().manual_seed(1)
    preds, targets = torch.rand(3, 3, 32, 32, generator=g), torch.rand(3, 3, 32, 32, generator=g)
    t = handle(tmp_path, objectives=["psnr_y"], metric_names=["ssim_y"])  # no LPIPS: faster

    def training(trial):
        return trial.score(preds, targets, images=["a.png", "b.png", "c.png"])

    outcome = run_training(training, t)
    assert outcome.state == "COMPLETE" and outcome.images == ["a.png", "b.png", "c.png"]
    assert set(outcome.per_image) == {"psnr_y", "ssim_y"}
    for metric, values in outcome.per_image.items():
        assert len(values) == 3 and sum(values) / 3 == pytest.approx(outcome.values[metric], rel=1e-12)
        assert len(set(values)) == 3  # one value per image, not the mean repeated
    # Names default to the pairs' positions.
    t.score(preds[:2], targets[:2])
    assert t.images == ["0", "1"] and len(t.per_image["psnr_y"]) == 2


def test_per_image_values_that_do_not_average_to_the_returned_value_are_not_recorded(tmp_path):
    from layersearch.trial.outcome import run_training

    g = torch.Generator().manual_seed(2)
    preds, targets = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    t = handle(tmp_path, objectives=["psnr_y"], metric_names=["psnr_y"])

    def training(trial):
        scores = trial.score(preds, targets)
        return {"psnr_y": scores["psnr_y"] + 1.0}  # another value than the scored images give

    outcome = run_training(training, t)
    assert outcome.state == "COMPLETE" and outcome.per_image == {} and outcome.images == []


def test_record_per_image_needs_one_value_per_image(tmp_path):
    with pytest.raises(ValueError, match="psnr_y do not have one value per image"):
        handle(tmp_path).record_per_image({"psnr_y": [1.0, 2.0]}, ["a", "b", "c"])
