"""Each complete built-in trial of a sweep records its final scores per validation image (user attributes
``per_image`` and ``images``), for paired comparisons blocked by seed x image."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from layersearch.cli import main


def test_a_builtin_trial_records_one_value_per_validation_image_averaging_to_its_value(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["sweep", "preset=smoke", "study.name=pi", "study.n_trials=2", "trainer.steps=2", "study.pruner=none",
                 "search_space.baselines=[pixel]", "study.objectives=[lpips,psnr_y]",
                 f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"])
    assert code == 0
    study = optuna.load_study(study_name="pi", storage=f"sqlite:///{tmp_path}/studies/pi/optuna.db")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 2
    for t in complete:
        images, per_image = t.user_attrs["images"], t.user_attrs["per_image"]
        assert len(images) >= 2 and len(set(images)) == len(images)  # the validation images, by name
        assert {"lpips", "psnr_y", "ssim_y"} <= set(per_image)
        for metric, values in per_image.items():
            assert len(values) == len(images), metric
        for metric, value in zip(["lpips", "psnr_y"], t.values, strict=True):
            assert sum(per_image[metric]) / len(images) == pytest.approx(value, rel=1e-9, abs=1e-12)
    # The same images in the same order in every trial: what blocking by image needs.
    assert complete[0].user_attrs["images"] == complete[1].user_attrs["images"]
