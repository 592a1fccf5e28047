"""A PyTorch Lightning super-resolution x4 training whose perceptual loss layersearch searches.

`SRModule` is an ordinary LightningModule: the loss is a constructor argument, so the sweep's sampled loss
(``t.loss``) goes in like any other module, and outside a sweep any ``PerceptualLoss`` (or ``nn.L1Loss()``)
does. Validation logs ``val_haarpsi`` and ``val_psnr_y`` (`layersearch.score_images`, the protocol of
`layersearch score`); `layersearch.lightning.Reporter` reports them to the trial at each validation end and
stops the training there when the pruner says so. ``train(t)`` is the function a sweep calls:

    layersearch sweep trial=python trial.fn=examples/lightning/sr_module.py:train \\
        loss_net=efficientnet_lite0 search_space=sr_lite0 study.objectives=[haarpsi,psnr_y] \\
        study.name=lightning_sr trainer.steps=200

The data are photos that ship with scikit-image (no download): random crops of three for training, one
for validation, downscaled x4 with bicubic interpolation.
"""

from __future__ import annotations

import logging
import warnings

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from skimage import data as photos
from skimage.transform import resize
from torch import nn
from torch.utils.data import DataLoader, Dataset

import layersearch
from layersearch.lightning import Reporter

SCALE = 4
TRAIN_PHOTOS = ("astronaut", "rocket", "coffee")
VAL_PHOTOS = ("chelsea",)
METRICS = ["haarpsi", "psnr_y"]  # the objectives a sweep of this module optimises


def quiet_lightning() -> None:
    """Keep a sweep's log to one line per trial: Lightning's banner ("GPU available: False ...") and three
    warnings that do not apply here are dropped; every other warning stays."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")  # in-memory photos: nothing to load
    # The loss network is frozen in eval mode on purpose (batch-norm statistics of ImageNet, no dropout).
    warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode at the start of training.*")
    warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")  # Lightning vs torch


def photo(name: str, size: int) -> torch.Tensor:
    """A scikit-image photo as a 3 x size x size RGB tensor in [0, 1]."""
    image = resize(getattr(photos, name)(), (size, size), anti_aliasing=True).astype(np.float32)
    return torch.from_numpy(image).permute(2, 0, 1)


def downscale(hr: torch.Tensor) -> torch.Tensor:
    return F.interpolate(hr.unsqueeze(0), scale_factor=1 / SCALE, mode="bicubic", antialias=True).squeeze(0).clamp(0, 1)


class Crops(Dataset):
    """``length`` random (LR, HR) crops of the photos (seeded: the same crops in every trial of a seed)."""

    def __init__(self, names: tuple[str, ...], crop: int, length: int, seed: int, size: int = 256):
        self.images = [photo(n, size) for n in names]
        self.crop, self.length, self.seed = crop, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + i)
        image = self.images[int(torch.randint(len(self.images), (1,), generator=g))]
        y, x = (int(v) for v in torch.randint(image.shape[-1] - self.crop + 1, (2,), generator=g))
        hr = image[:, y : y + self.crop, x : x + self.crop]
        return downscale(hr), hr


class Upscaler(nn.Module):
    """A small ESPCN-style x4 upscaler: convolutions on the LR image, then pixel shuffle, added to bicubic."""

    def __init__(self, channels: int = 16):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(channels, 3 * SCALE**2, 3, padding=1), nn.PixelShuffle(SCALE))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(lr, scale_factor=SCALE, mode="bicubic")
        return (base + self.body(lr)).clamp(0, 1)


class SRModule(pl.LightningModule):
    """SR x4 trained with ``loss`` (the trial's ``t.loss``: any ``(output, target) -> scalar`` module)."""

    def __init__(self, loss: nn.Module, lr: float = 2e-3, channels: int = 16):
        super().__init__()
        self.save_hyperparameters(ignore=["loss"])
        self.net, self.loss = Upscaler(channels), loss

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.net(lr)

    def training_step(self, batch, batch_idx):
        lr, hr = batch
        loss = self.loss(self(lr), hr)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        lr, hr = batch
        scores = layersearch.score_images(self(lr), hr, scale=SCALE, names=METRICS)
        self.log_dict({f"val_{name}": value for name, value in scores.items()}, batch_size=len(lr))

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.hparams.lr)


def loaders(seed: int, batch_size: int = 4, crop: int = 64) -> tuple[DataLoader, DataLoader]:
    train = Crops(TRAIN_PHOTOS, crop, length=10_000, seed=seed)
    val = Crops(VAL_PHOTOS, 128, length=4, seed=1234)  # the same validation crops in every trial
    return DataLoader(train, batch_size=batch_size, shuffle=True), DataLoader(val, batch_size=4)


def trainer(max_steps: int, callbacks: list, root: str, eval_every: int = 25) -> pl.Trainer:
    """A CPU/GPU trainer that validates every ``eval_every`` steps and writes nothing to the terminal but
    warnings (no progress bar: a sweep's log stays one line per trial)."""
    return pl.Trainer(max_steps=max_steps, val_check_interval=eval_every, check_val_every_n_epoch=None,
                      callbacks=callbacks, default_root_dir=root, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=1)


def train(t: layersearch.Trial) -> dict[str, float]:
    """One trial: fit `SRModule` with the sampled loss for ``t.steps`` steps; return the last validation."""
    quiet_lightning()
    pl.seed_everything(t.seed, verbose=False)
    train_data, val_data = loaders(t.seed)
    reporter = Reporter(t, monitor="val_haarpsi", extra=["val_psnr_y"])
    fit = trainer(t.steps, [reporter], str(t.dir), eval_every=max(1, min(25, t.steps // 4)))
    fit.fit(SRModule(t.loss), train_data, val_data)  # a pruned trial leaves here as layersearch.Pruned
    return reporter.last
