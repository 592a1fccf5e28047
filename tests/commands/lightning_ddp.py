"""A command trial that trains with Lightning's DDP on 2 CPU processes (gloo) and reports with the Reporter.

Every rank builds the Reporter from the trial's files; only global rank zero writes metrics lines. Each rank
appends its pid to ``ranks.txt`` in the trial folder, so a test can check that none outlives the trial.
"""

from __future__ import annotations

import os

import lightning.pytorch as pl
import torch
from torch import nn

from layersearch.lightning import callbacks_from_env
from layersearch.trial.env import trial_from_env


class Fit(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = nn.Linear(1, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return ((self.w(x) - y) ** 2).mean()

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_quality", ((self.w(x) - y) ** 2).mean(), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=float(os.environ.get("LR", "0.05")))


if __name__ == "__main__":
    t = trial_from_env()
    with open(t.dir / "ranks.txt", "a") as ranks:
        ranks.write(f"{os.getpid()}\n")
    torch.manual_seed(t.seed)
    x = torch.linspace(-1, 1, 64).unsqueeze(1)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, 2 * x + t.layer_config.get("pixel_weight", 0)),
                                       batch_size=8)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=t.steps, val_check_interval=2,
                         check_val_every_n_epoch=None, callbacks=callbacks_from_env("val_quality"), logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Fit(), data, data)
