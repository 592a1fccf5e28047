"""Evaluation metrics and their conventions: PSNR/SSIM on the Y channel with a shaved border, LPIPS, a
Gram-matrix style distance, and piq's weight-free perceptual metrics (HaarPSI, DSS, VSI, MS-SSIM).

This module owns the range conventions. Every public function takes RGB images in [0, 1],
``N x 3 x H x W``; the conversions to Y on [0, 255] and to LPIPS's [-1, 1] happen here and nowhere else.
All metrics are evaluation only: they run under ``torch.no_grad`` and return one value per image.
Each metric's name, direction, format and use are its entry in ``trial.metric_registry``.
"""

from __future__ import annotations

import warnings

import lpips
import numpy as np
import torch
from skimage.metrics import structural_similarity
from torch import nn

from ..errors import ConfigValueError
from ..lossnet.loss import gram_matrix
from ..lossnet.weights import check_fits, features_state_dict, is_random, weights_label
from .metric_registry import LPIPS_NETS, METRIC_DIRECTIONS, get_metric

__all__ = [
    "LPIPS_NETS",
    "METRIC_DIRECTIONS",
    "PSNR_CAP_DB",
    "PIQ_METRICS",
    "LPIPSMetric",
    "piq_metric",
    "psnr_y",
    "rgb_to_y",
    "shave",
    "ssim_y",
    "style_distance",
]

# Identical images have infinite PSNR; inf poisons means over a validation set, Optuna rejects it as an
# objective value and MLflow cannot store it, so scores are capped at a value no real restoration reaches.
PSNR_CAP_DB = 100.0

# MATLAB rgb2ycbcr (ITU-R BT.601, studio swing): Y in [16, 235] for RGB in [0, 1].
_Y_OFFSET = 16.0
_Y_WEIGHTS = (65.481, 128.553, 24.966)

# SSIM as in Wang et al. 2004 and MATLAB's ssim: Gaussian window, sigma 1.5, population covariance.
# skimage fixes truncate=3.5 when gaussian_weights=True, so the radius is int(3.5 * 1.5 + 0.5) = 5: an
# 11 x 11 window, and skimage crops that 5-pixel radius before averaging, like MATLAB's 'valid' filtering.
_SSIM_SIGMA = 1.5
_SSIM_WINDOW = 2 * int(3.5 * _SSIM_SIGMA + 0.5) + 1


def _check_images(images: torch.Tensor, name: str) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} should be RGB images N x 3 x H x W in [0, 1], got shape {tuple(images.shape)}")


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    _check_images(pred, "pred")
    _check_images(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")


def rgb_to_y(images: torch.Tensor) -> torch.Tensor:
    """Luma of RGB images, BT.601 as MATLAB's ``rgb2ycbcr``: ``Y = 16 + 65.481 R + 128.553 G + 24.966 B``.

    Args:
        images: ``N x 3 x H x W`` RGB in [0, 1].

    Returns:
        ``N x 1 x H x W`` Y on the [0, 255] scale (16 for black, 235 for white), in the input's dtype.
    """
    _check_images(images, "images")
    weights = torch.tensor(_Y_WEIGHTS, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return _Y_OFFSET + (images * weights).sum(dim=1, keepdim=True)


def shave(images: torch.Tensor, border: int) -> torch.Tensor:
    """Remove ``border`` pixels from each side of ``... x H x W`` images (the SR convention: border = scale).

    ``border=0`` returns the images unchanged.
    """
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    if border == 0:
        return images
    h, w = images.shape[-2:]
    if 2 * border >= min(h, w):
        raise ValueError(f"border {border} leaves nothing of {h} x {w} images")
    return images[..., border:-border, border:-border]


def _y_float64(images: torch.Tensor, border: int) -> torch.Tensor:
    # float64 on the CPU: PSNRs near the cap need the precision, and not every device has float64.
    # Out-of-range generator outputs are clamped, as they would be when the image is saved.
    images = images.detach().to("cpu", torch.float64).clamp(0.0, 1.0)
    return shave(rgb_to_y(images), border)


@torch.no_grad()
def psnr_y(pred: torch.Tensor, target: torch.Tensor, border: int) -> torch.Tensor:
    """Per-image PSNR in dB on the Y channel (peak 255) after shaving ``border`` pixels.

    Values are clamped to [0, 1] but not quantised to uint8: quantising is what saving to PNG does, yet it
    adds up to 0.5 grey level of noise of its own and makes the score depend on rounding, so scores here
    are slightly higher than BasicSR's (which rounds) for the same float outputs.

    Args:
        pred: ``N x 3 x H x W`` RGB in [0, 1].
        target: same shape.
        border: pixels shaved from each side before scoring (the SR scale factor; 0 for none).

    Returns:
        ``[N]`` float64 on the CPU, in (-inf, PSNR_CAP_DB]; identical images score ``PSNR_CAP_DB``.
    """
    _check_pair(pred, target)
    mse = (_y_float64(pred, border) - _y_float64(target, border)).pow(2).mean(dim=(1, 2, 3))
    psnr = 10.0 * torch.log10(255.0**2 / mse)  # mse == 0 gives +inf, removed by the cap below
    return psnr.clamp(max=PSNR_CAP_DB)


@torch.no_grad()
def ssim_y(pred: torch.Tensor, target: torch.Tensor, border: int) -> torch.Tensor:
    """Per-image SSIM on the Y channel on [0, 255] after shaving ``border`` pixels, MATLAB convention.

    scikit-image's ``structural_similarity`` with a Gaussian window (sigma 1.5, 11 x 11), population
    covariance and ``data_range=255``. Clamped to [0, 1] like ``psnr_y``, not quantised.

    Args:
        pred: ``N x 3 x H x W`` RGB in [0, 1]; after shaving at least 11 x 11.
        target: same shape.
        border: pixels shaved from each side before scoring (the SR scale factor; 0 for none).

    Returns:
        ``[N]`` float64 on the CPU, in [-1, 1]; identical images score 1.
    """
    _check_pair(pred, target)
    pred_y, target_y = _y_float64(pred, border), _y_float64(target, border)
    if min(pred_y.shape[-2:]) < _SSIM_WINDOW:
        raise ValueError(
            f"ssim_y needs images of at least {_SSIM_WINDOW} x {_SSIM_WINDOW} after shaving {border} pixels, "
            f"got {tuple(pred_y.shape[-2:])}"
        )
    scores = [
        structural_similarity(
            p[0].numpy(),
            t[0].numpy(),
            gaussian_weights=True,
            sigma=_SSIM_SIGMA,
            use_sample_covariance=False,
            data_range=255.0,
        )
        for p, t in zip(pred_y, target_y, strict=True)
    ]
    return torch.from_numpy(np.asarray(scores, dtype=np.float64))


#: piq's full-reference metrics that need no learned weights: our name -> piq's function. Each one's direction,
#: format and smallest image side are its entry in ``trial.metric_registry``.
PIQ_METRICS: dict[str, str] = {"haarpsi": "haarpsi", "dss": "dss", "vsi": "vsi", "ms_ssim": "multi_scale_ssim"}


@torch.no_grad()
def piq_metric(name: str, pred: torch.Tensor, target: torch.Tensor, border: int) -> torch.Tensor:
    """Per-image ``haarpsi``, ``dss``, ``vsi`` or ``ms_ssim`` as piq computes it, after shaving ``border`` px.

    The convention: RGB in [0, 1] (clamped, as for PSNR), ``data_range=1``, piq's default parameters, float32
    on the images' device; piq converts to its own colour spaces (YIQ for HaarPSI, LMN for VSI, luminance for
    DSS; MS-SSIM averages the RGB channels). Higher is better for all four, 1 for identical images.

    Args:
        pred: ``N x 3 x H x W`` RGB in [0, 1].
        target: same shape.
        border: pixels shaved from each side before scoring (the SR scale factor; 0 for none).

    Returns:
        ``[N]`` float32. ValueError when the shaved images are smaller than the metric accepts.
    """
    import piq  # imported when first used: the CLI and most tests never score with piq

    _check_pair(pred, target)
    function, min_side = PIQ_METRICS[name], get_metric(name).min_side
    pred, target = shave(pred.detach().float().clamp(0.0, 1.0), border), shave(target.detach().float(), border)
    side = min(pred.shape[-2:])
    if side < min_side:
        raise ValueError(f"{name} needs images of at least {min_side} x {min_side} px after shaving {border} px, "
                         f"got {pred.shape[-1]} x {pred.shape[-2]}")
    return getattr(piq, function)(pred, target.clamp(0.0, 1.0), data_range=1.0, reduction="none")


def _to_lpips_range(images: torch.Tensor) -> torch.Tensor:
    # The only place [0, 1] becomes LPIPS's [-1, 1] (what lpips' own normalize=True does).
    return images.float() * 2.0 - 1.0


class LPIPSMetric(nn.Module):
    """LPIPS (Zhang et al. 2018) with the calibrated linear heads shipped in the ``lpips`` package and a
    backbone loaded through ``layersearch.lossnet.weights`` (``imagenet``, a local file, or a labelled ``random``).

    Frozen: always in eval mode, no parameter requires grad. Move it with ``.to(device)``.

    Args:
        net: LPIPS trunk, one of ``alex`` (the default for evaluation: independent of the VGG loss
            networks being searched), ``vgg``, ``squeeze``.
        weights: ``imagenet``, ``random`` or a path to a torchvision state dict of the matching
            architecture (whole model or its ``features`` only).
        seed: seeds the random initialisation (backbone for ``random``) so runs are repeatable.

    Raises:
        ConfigValueError: unknown ``net``.
        WeightsError: weights cannot be fetched, read, or do not fit the architecture.
    """

    def __init__(self, net: str = "alex", weights: str = "imagenet", seed: int = 0):
        super().__init__()
        if net not in LPIPS_NETS:
            raise ConfigValueError(f"metrics.lpips.net: unknown LPIPS net {net!r}; choose one of {', '.join(LPIPS_NETS)}")
        arch = LPIPS_NETS[net]
        weights = str(weights)
        # Fetch/read the weights before the (slow, for vgg) build so a bad spec fails fast.
        state = features_state_dict(arch, weights)
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            torch.manual_seed(seed)
            # lpips builds its trunk with torchvision's deprecated pretrained= argument; not our concern.
            warnings.filterwarnings("ignore", message=r".*(pretrained|weight enum).*", category=UserWarning)
            # pretrained=True loads only the calibrated linear heads (files inside the lpips package);
            # pnet_rand=True stops lpips from downloading the trunk itself: we load it below.
            self.model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        if state is not None:
            trunk = self._trunk_view()
            check_fits(trunk, state, arch, weights)
            trunk.load_state_dict(state)
        self.model.requires_grad_(False)
        self.net = net
        self.weights = weights
        self.random_weights = is_random(weights)
        self.weights_label = weights_label(weights)
        self._target_cache: dict[int, tuple[torch.Tensor, int, list[torch.Tensor]]] = {}
        self.train(False)

    def _trunk_view(self) -> nn.ModuleDict:
        # lpips spreads torchvision's ``features`` over net.slice1..sliceK, keeping each module's original
        # index as its name; gathering them by index gives a module whose state dict has torchvision's keys
        # ("0.weight", "3.squeeze.bias"), sharing the parameters, so loading into it loads the trunk.
        modules: dict[str, nn.Module] = {}
        for name, child in self.model.net.named_children():
            if name.startswith("slice"):
                modules.update(child.named_children())
        return nn.ModuleDict(sorted(modules.items(), key=lambda item: int(item[0])))

    def train(self, mode: bool = True) -> LPIPSMetric:
        # A metric never trains: a parent's .train() must not switch on the linear heads' dropout.
        return super().train(False)

    @torch.no_grad()
    def forward(self, pred: torch.Tensor, target: torch.Tensor, cache_target: bool = False) -> torch.Tensor:
        """LPIPS distance per image.

        Args:
            pred: ``N x 3 x H x W`` RGB in [0, 1].
            target: same shape.
            cache_target: keep ``target``'s features for the next call with the same tensor (a validation
                set scored at every evaluation); the tensor must not be modified in place meanwhile.

        Returns:
            ``[N]`` float32 distances, >= 0, 0 for identical images.
        """
        _check_pair(pred, target)
        if not cache_target:
            return self.model(_to_lpips_range(pred), _to_lpips_range(target), normalize=False).flatten()
        # lpips.LPIPS.forward (version 0.1, spatial=False) with the target side computed once.
        target_feats = self._target_features(target)
        distance = 0
        for lin, p, t in zip(self.model.lins, self._unit_features(pred), target_feats, strict=True):
            distance = distance + lpips.spatial_average(lin((p - t) ** 2), keepdim=True)
        return distance.flatten()

    def _unit_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [lpips.normalize_tensor(f) for f in self.backbone_features(images)]

    def _target_features(self, target: torch.Tensor) -> list[torch.Tensor]:
        # Keyed by the tensor itself (held here, so its id cannot be reused) and its version counter.
        hit = self._target_cache.get(id(target))
        if hit is None or hit[0] is not target or hit[1] != target._version:
            hit = (target, target._version, self._unit_features(target))
            self._target_cache[id(target)] = hit
        return hit[2]

    @torch.no_grad()
    def backbone_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The trunk's layer outputs (LPIPS's ReLU taps: 5 for alex and vgg, 7 for squeeze).

        Args:
            images: ``N x 3 x H x W`` RGB in [0, 1].

        Returns:
            A list of ``N x C_l x H_l x W_l`` float32 tensors, unnormalised.
        """
        _check_images(images, "images")
        return list(self.model.net(self.model.scaling_layer(_to_lpips_range(images))))


@torch.no_grad()
def style_distance(metric: LPIPSMetric, pred: torch.Tensor, style_image: torch.Tensor) -> torch.Tensor:
    """Mean over the LPIPS trunk's layers of the squared Frobenius distance between Gram matrices.

    Measured on the LPIPS backbone on purpose, so that the score is independent of the VGG layers being
    searched. Gram matrices are ``F F^T / (C*H*W)`` (``layersearch.lossnet.loss.gram_matrix``), so images of
    different sizes compare.

    Args:
        metric: supplies the backbone.
        pred: ``N x 3 x H x W`` RGB in [0, 1].
        style_image: ``1 x 3 x H' x W'`` RGB in [0, 1], compared with every image of ``pred``.

    Returns:
        ``[N]`` float32 distances, >= 0, 0 when an image equals the style image.
    """
    _check_images(pred, "pred")
    _check_images(style_image, "style_image")
    if style_image.shape[0] != 1:
        raise ValueError(f"style_image should be one image, 1 x 3 x H x W, got shape {tuple(style_image.shape)}")
    per_layer = [
        (gram_matrix(p) - gram_matrix(s)).pow(2).sum(dim=(1, 2))
        for p, s in zip(metric.backbone_features(pred), metric.backbone_features(style_image), strict=True)
    ]
    return torch.stack(per_layer).mean(dim=0)
