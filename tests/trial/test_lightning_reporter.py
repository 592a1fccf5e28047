"""`layersearch.lightning.Reporter` against a real Lightning Trainer on the CPU (a tiny model, a few steps)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

pl = pytest.importorskip("lightning.pytorch")

from layersearch import Pruned, Trial, TrialFailed  # noqa: E402
from layersearch.lightning import Reporter, callbacks_from_env  # noqa: E402
from layersearch.trial.env import ENV  # noqa: E402


class Tiny(pl.LightningModule):
    """Fits y = 2x; logs val_mse (falls) and val_gain (rises) at each validation."""

    def __init__(self):
        super().__init__()
        self.w = nn.Linear(1, 1)
        self.perceptual = None

    def training_step(self, batch, batch_idx):
        x, y = batch
        return ((self.w(x) - y) ** 2).mean()

    def validation_step(self, batch, batch_idx):
        x, y = batch
        mse = ((self.w(x) - y) ** 2).mean()
        self.log_dict({"val_mse": mse, "val/gain": -mse})

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def data():
    x = torch.linspace(-1, 1, 32).unsqueeze(1)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, 2 * x), batch_size=8)


def handle(tmp_path, prune_at: int | None = None, seen: list | None = None) -> Trial:
    def reporter(step, values):
        seen.append((step, values))
        return f"pruned at step {step}" if prune_at is not None and step >= prune_at else None

    seen = [] if seen is None else seen
    return Trial(number=0, study_name="s", params={}, layer_config={"pixel_weight": 1.0, "content_layers": {}},
                 steps=12, seed=0, device="cpu", dir=tmp_path, objectives=["mse"], reporter=reporter)


def fit(trial_reporter, steps: int = 12):
    trainer = pl.Trainer(max_steps=steps, val_check_interval=4, check_val_every_n_epoch=None, accelerator="cpu",
                         callbacks=[trial_reporter], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=1)
    trainer.fit(Tiny(), data(), data())
    return trainer


def test_reports_each_validation_end_with_the_global_step_and_skips_the_sanity_check(tmp_path):
    seen: list = []
    reporter = Reporter(handle(tmp_path, seen=seen), monitor="val_mse", extra=["val/gain"])
    fit(reporter)
    assert [step for step, _ in seen] == [4, 8, 12]  # no report from the sanity check before step 0
    assert set(seen[0][1]) == {"mse", "gain"}  # val_ and val/ stripped: the objectives' names
    assert reporter.last == seen[-1][1] and seen[-1][1]["mse"] < seen[0][1]["mse"]


def test_a_pruned_trial_stops_at_that_validation_end_and_pruned_leaves_fit(tmp_path):
    seen: list = []
    reporter = Reporter(handle(tmp_path, prune_at=8, seen=seen), monitor="val_mse")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(Pruned, match="pruned at step 8"):
            fit(reporter)
    assert [step for step, _ in seen] == [4, 8]  # nothing trained or reported after the pruning report
    assert not [w for w in caught if "exception" in str(w.message).lower()], [str(w.message) for w in caught]


def test_a_metric_not_logged_fails_the_trial_naming_what_was_logged(tmp_path):
    with pytest.raises(TrialFailed, match=r"val_lpips not logged at step 4; logged: val/gain, val_mse"):
        fit(Reporter(handle(tmp_path), monitor="val_lpips"))


def test_rename_and_loss_attr(tmp_path):
    seen: list = []
    trial = handle(tmp_path, seen=seen)
    reporter = Reporter(trial, monitor="val_mse", rename={"val_mse": "quality"}, loss_attr="perceptual")
    model = Tiny()
    trainer = pl.Trainer(max_steps=4, val_check_interval=4, check_val_every_n_epoch=None, accelerator="cpu",
                         callbacks=[reporter], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, data(), data())
    assert set(seen[0][1]) == {"quality"}
    assert model.perceptual is trial.loss  # handed to the module in setup, a submodule from then on


def test_a_reporter_takes_only_a_trial_handle():
    with pytest.raises(TypeError, match="takes the layersearch trial handle"):
        Reporter(object(), monitor="val_mse")


def test_callbacks_from_env_is_empty_outside_a_sweep_and_a_reporter_inside(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV["trial_json"], raising=False)
    assert callbacks_from_env("val_mse") == []
    from layersearch.settings import LpipsSettings
    from layersearch.trial.env import write_trial_files

    trial = handle(tmp_path)
    values = write_trial_files(trial, tmp_path / "metrics.jsonl", None, LpipsSettings(net="alex", weights="random"), 0)
    monkeypatch.setenv(ENV["trial_json"], values["trial_json"])
    (callback,) = callbacks_from_env("val_mse")
    fit(callback, steps=4)
    assert (tmp_path / "metrics.jsonl").read_text().count('"step": 4') == 1  # a line for the sweep to read
