"""A plain PyTorch denoiser whose perceptual loss layersearch searches.

Nothing here uses layersearch's tasks or models: the model, the data (photos that ship with scikit-image,
with Gaussian noise added) and the loop are this script's own. Two lines connect it to a sweep:
``t = layersearch.trial_from_env()`` gives the sampled loss, the budget and the seed, and
``t.report(step, **t.score(outputs, targets))`` sends validation scores back (and lets the sweep prune).

    layersearch sweep trial=command trial.cmd='python examples/denoise_script/train.py' \\
        study.name=denoise study.objectives=[lpips,psnr_y] study.n_trials=20

``train(t)`` is also what ``trial=python trial.fn=examples/denoise_script/train.py:train`` calls in-process.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage import data as photos
from skimage.transform import resize
from torch import nn

import layersearch

NOISE_SIGMA = 0.1
CROP = 32
TRAIN_PHOTOS = ("astronaut", "rocket", "coffee")
VAL_PHOTOS = ("chelsea",)


def load(name: str, size: int = 128) -> torch.Tensor:
    """A scikit-image photo as a 3 x size x size RGB tensor in [0, 1]."""
    image = getattr(photos, name)()
    image = resize(image, (size, size), anti_aliasing=True, preserve_range=False).astype(np.float32)
    return torch.from_numpy(image).permute(2, 0, 1)


class Denoiser(nn.Module):
    """Three convolutions predicting the noise, subtracted from the input (a tiny DnCNN)."""

    def __init__(self, channels: int = 16):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(channels, 3, 3, padding=1))

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        return (noisy - self.body(noisy)).clamp(0, 1)


def train(t, batch_size: int = 4, lr: float = 2e-3, eval_every: int = 10, crop: int = CROP,
          size: int = 128) -> dict[str, float]:
    """Train the denoiser with ``t.loss`` for ``t.steps`` steps; report validation scores every ``eval_every``.

    ``crop`` px training crops of the photos resized to ``size`` px.
    """
    torch.manual_seed(t.seed)
    device = t.device
    clean_train = torch.stack([load(n, size) for n in TRAIN_PHOTOS]).to(device)
    clean_val = torch.stack([load(n, size) for n in VAL_PHOTOS]).to(device)
    noise = torch.Generator().manual_seed(1234)  # the same noisy validation images in every trial
    noisy_val = (clean_val + NOISE_SIGMA * torch.randn(clean_val.shape, generator=noise).to(device)).clamp(0, 1)
    model = Denoiser().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = t.loss  # the layer config this trial samples, as a PerceptualLoss on t.device
    scores: dict[str, float] = {}
    for step in range(1, t.steps + 1):
        i = torch.randint(0, clean_train.shape[0], (batch_size,))
        y, x = torch.randint(0, clean_train.shape[-1] - crop, (2,))
        clean = clean_train[i, :, y : y + crop, x : x + crop]
        noisy = (clean + NOISE_SIGMA * torch.randn_like(clean)).clamp(0, 1)
        loss = loss_fn(model(noisy), clean)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % eval_every == 0 or step == t.steps:
            with torch.no_grad():
                scores = t.score(model(noisy_val), clean_val)  # lpips, psnr_y, ssim_y: `layersearch score`'s protocol
            t.report(step, **scores, train_loss=loss.detach())
    return scores


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="the denoiser, as a layersearch command trial")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop", type=int, default=CROP)
    parser.add_argument("--size", type=int, default=128, help="photos resized to this many px")
    args = parser.parse_args()
    train(layersearch.trial_from_env(), batch_size=args.batch_size, crop=args.crop, size=args.size)
