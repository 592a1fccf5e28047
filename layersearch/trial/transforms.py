"""Crops and the super-resolution degradation of image tensors (RGB, values in [0, 1], ``3 x H x W`` or
``N x 3 x H x W``); the images come from ``data``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .data import DataError

__all__ = ["center_crop", "check_min_size", "crop_to_multiple", "degrade", "random_crops"]


# --------------------------------------------------------------------------------------------------------
# Crops


def check_min_size(images: Sequence[tuple[Any, torch.Tensor]], size: int, what: str) -> None:
    """Raise DataError naming (up to five of) the images smaller than ``size`` px in either dimension.

    Args:
        images: ``(name, 3 x H x W image)`` pairs.
        size: the crop size the images must hold.
        what: how the message names the set, e.g. ``"the training set"``.
    """
    small = [(str(name), img.shape[-1], img.shape[-2]) for name, img in images
             if img.shape[-2] < size or img.shape[-1] < size]
    if not small:
        return
    listed = ", ".join(f"{name} ({w}x{h})" for name, w, h in small[:5])
    more = f", and {len(small) - 5} more" if len(small) > 5 else ""
    verb = "image in" if len(small) == 1 else "images in"
    are = "is" if len(small) == 1 else "are"
    raise DataError(f"{len(small)} {verb} {what} {are} smaller than the {size}px crop: {listed}{more} (sizes are WxH)")


def random_crops(images: Sequence[torch.Tensor], size: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """A batch of random ``size`` px square crops, each randomly flipped left-right.

    Each crop comes from an image chosen uniformly at random (not weighted by area), at a uniformly random
    position. Deterministic for a given ``generator`` state (a CPU generator).

    Args:
        images: ``3 x H x W`` images, each at least ``size`` px in both dimensions.
        size: crop side in px.
        batch: number of crops.
        generator: the source of randomness.

    Returns:
        ``batch x 3 x size x size`` tensor (a copy; the images are untouched), on the images' device.
    """
    if not images:
        raise ValueError("random_crops needs at least one image")
    for i, img in enumerate(images):
        if img.shape[-2] < size or img.shape[-1] < size:
            raise ValueError(f"image {i} is {img.shape[-1]}x{img.shape[-2]} (WxH), smaller than the {size}px crop")
    which = torch.randint(len(images), (batch,), generator=generator).tolist()
    flips = torch.randint(2, (batch,), generator=generator).tolist()
    crops = []
    for idx, flip in zip(which, flips, strict=True):
        img = images[idx]
        h, w = img.shape[-2:]
        y = int(torch.randint(h - size + 1, (1,), generator=generator))
        x = int(torch.randint(w - size + 1, (1,), generator=generator))
        crop = img[..., y : y + size, x : x + size]
        crops.append(crop.flip(-1) if flip else crop)
    return torch.stack(crops)


def center_crop(image: torch.Tensor, size: int | None) -> torch.Tensor:
    """Centre ``size x size`` crop of ``[..., H, W]`` (a view); ``None`` returns ``image`` unchanged."""
    if size is None:
        return image
    h, w = image.shape[-2:]
    if size > h or size > w:
        raise ValueError(f"center_crop: image is {w}x{h} (WxH), smaller than the {size}px crop")
    top, left = (h - size) // 2, (w - size) // 2
    return image[..., top : top + size, left : left + size]


def crop_to_multiple(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """Cut the bottom rows and right columns of ``[..., H, W]`` so H and W divide by ``multiple`` (a view)."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    h, w = image.shape[-2:]
    nh, nw = h - h % multiple, w - w % multiple
    if nh == 0 or nw == 0:
        raise ValueError(f"crop_to_multiple: image {w}x{h} (WxH) is smaller than {multiple} px")
    return image[..., :nh, :nw]


# --------------------------------------------------------------------------------------------------------
# Degradation


def degrade(hr: torch.Tensor, scale: int = 4, blur_sigma: float = 0.0) -> torch.Tensor:
    """The super-resolution degradation: optional Gaussian blur, then bicubic downsampling by ``scale``.

    1. If ``blur_sigma > 0``: Gaussian blur, separable, ``k = 2 * ceil(3 * blur_sigma) + 1`` taps per axis
       (7 for sigma 1.0), weights ``exp(-t**2 / (2 * sigma**2))`` for ``t = -(k-1)/2 .. (k-1)/2``
       normalised to sum 1, reflect padding (torchvision's ``gaussian_blur``). Johnson et al. (2016) blur
       with sigma 1.0 before downsampling.
    2. Bicubic resize to ``H/scale x W/scale`` with antialiasing (``F.interpolate(mode="bicubic",
       antialias=True, align_corners=False)``): Keys' cubic kernel with a = -0.5 stretched by ``scale``
       (support ``4 * scale`` input px), half-pixel centres, weights renormalised at the borders. This
       equals PIL's ``Image.resize(..., BICUBIC)`` on float images and matches MATLAB's ``imresize``
       (the usual SR benchmark kernel) away from the borders.
    3. Clamp to [0, 1] (the cubic kernel overshoots at edges).

    Args:
        hr: ``N x 3 x H x W`` (or ``3 x H x W``) float images in [0, 1]; H and W divisible by ``scale``.
        scale: integer downsampling factor.
        blur_sigma: Gaussian sigma in HR px; 0 for no blur.

    Returns:
        ``N x 3 x H/scale x W/scale`` (or ``3 x ...``) in [0, 1].
    """
    if scale < 1 or int(scale) != scale:
        raise DataError(f"scale must be a positive integer, got {scale}")
    if blur_sigma < 0:
        raise DataError(f"blur_sigma must be >= 0, got {blur_sigma}")
    if hr.ndim not in (3, 4):
        raise ValueError(f"degrade expects N x 3 x H x W or 3 x H x W, got shape {tuple(hr.shape)}")
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise DataError(f"degrade: image size {w}x{h} (WxH) is not divisible by scale {scale}; "
                         "use crop_to_multiple first")
    x = hr.unsqueeze(0) if hr.ndim == 3 else hr
    if blur_sigma > 0:
        from torchvision.transforms.v2.functional import gaussian_blur

        k = 2 * math.ceil(3 * blur_sigma) + 1
        x = gaussian_blur(x, kernel_size=[k, k], sigma=[float(blur_sigma), float(blur_sigma)])
    if scale > 1:
        x = F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)
    x = x.clamp(0, 1)
    return x.squeeze(0) if hr.ndim == 3 else x
