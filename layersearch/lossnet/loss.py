"""PerceptualLoss and the layer config it is built from (the schema `layersearch export` writes)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from ..errors import LayersearchError
from .declared import SPEC_KEYS, DeclaredNetwork, declare, is_declaration
from .features import FeatureExtractor
from .layers import LayerError, validate_layers
from .registry import loss_network

CRITERIA = ("mse", "l1")
_WEIGHT_KEYS = ("content_weight", "style_weight", "pixel_weight", "tv_weight")
_KEYS = ("loss_net", "content_layers", "style_layers", *_WEIGHT_KEYS, "criterion", "provenance")


class ConfigError(LayersearchError, ValueError):
    """A layer config that cannot be used; the message says which key and what is allowed."""


def _weight(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    if value < 0:
        raise ConfigError(f"{where} must be >= 0, got {value}")
    return float(value)


def _layer_weights(value: Any, key: str, arch: str) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must map layer names to weights, e.g. {{relu2_2: 1.0}}; got {value!r}")
    try:
        validate_layers(arch, [str(k) for k in value])
    except LayerError as err:
        raise ConfigError(f"{key}: {err}") from None
    return {str(name): _weight(w, f"{key}.{name}") for name, w in value.items()}


@dataclass
class LossConfig:
    """A perceptual loss: which layers of which network, with what weights (the schema `export` writes)."""

    arch: str = "vgg16"
    weights: str = "imagenet"
    content_layers: dict[str, float] = field(default_factory=lambda: {"relu2_2": 1.0})
    style_layers: dict[str, float] = field(default_factory=dict)
    content_weight: float = 1.0
    style_weight: float = 0.0
    pixel_weight: float = 0.0
    tv_weight: float = 0.0
    criterion: str = "mse"
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> LossConfig:
        """Validate a plain mapping (parsed YAML/JSON, OmegaConf converted to a dict)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a layer config must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(map(str, data)) - set(_KEYS))
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(unknown)} in layer config; valid keys: {', '.join(_KEYS)}")
        net = data.get("loss_net") or {}
        if not isinstance(net, Mapping):
            raise ConfigError(f"loss_net must be a mapping {{arch: vgg16, weights: imagenet}}, got {net!r}")
        bad_net = sorted(set(net) - set(SPEC_KEYS))
        if bad_net:
            raise ConfigError(f"unknown key(s) {', '.join(bad_net)} in loss_net; valid keys: {', '.join(SPEC_KEYS)}")
        if is_declaration(net):
            # A network of the user's own: the block says how to build it (a file that rebuilds its loss). Its
            # weights are this config's, not a new default for the network (configs are read from studies too).
            network = declare({k: v for k, v in net.items() if k != "weights"})
        else:
            try:
                network = loss_network(str(net.get("arch", "vgg16")))
            except LayerError as err:
                raise ConfigError(f"loss_net.arch: {err}") from None
        arch = network.name
        weights = str(net.get("weights") or network.default_weights)
        criterion = str(data.get("criterion", "mse"))
        if criterion not in CRITERIA:
            raise ConfigError(f"unknown criterion {criterion!r}; choose one of: {', '.join(CRITERIA)}")
        config = cls(
            arch=arch,
            weights=weights,
            content_layers=_layer_weights(data.get("content_layers"), "content_layers", arch),
            style_layers=_layer_weights(data.get("style_layers"), "style_layers", arch),
            criterion=criterion,
            provenance=dict(data.get("provenance") or {}),
            **{key: _weight(data.get(key, getattr(cls, key)), key) for key in _WEIGHT_KEYS},
        )
        config.check_has_terms()
        return config

    @classmethod
    def load(cls, source: str | Path | Mapping[str, Any]) -> LossConfig:
        """From a mapping or a ``.yaml``/``.yml``/``.json`` file."""
        if isinstance(source, Mapping):
            return cls.from_mapping(source)
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"layer config file {path} does not exist")
        try:
            text = path.read_text()
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as err:
            raise ConfigError(f"layer config file {path} could not be parsed: {err}") from None
        try:
            return cls.from_mapping(data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    def check_has_terms(self) -> None:
        content = self.content_weight > 0 and any(w > 0 for w in self.content_layers.values())
        style = self.style_weight > 0 and any(w > 0 for w in self.style_layers.values())
        if not (content or style or self.pixel_weight > 0):
            raise ConfigError(
                "nothing to optimise: no content or style layer with a positive weight and pixel_weight is 0"
            )

    @property
    def layers(self) -> list[str]:
        """Every layer the loss network must produce, content and style together."""
        return list(dict.fromkeys([*self.content_layers, *self.style_layers]))

    def to_dict(self) -> dict[str, Any]:
        """The export schema, plain types only (safe for YAML, JSON and MLflow)."""
        network = loss_network(self.arch)
        own = isinstance(network, DeclaredNetwork) and network.declared_by_user
        declared = network.spec.to_dict() if own else {"arch": self.arch}
        out: dict[str, Any] = {
            "loss_net": {**declared, "weights": self.weights},
            "content_layers": dict(self.content_layers),
            "style_layers": dict(self.style_layers),
            "content_weight": self.content_weight,
            "style_weight": self.style_weight,
            "pixel_weight": self.pixel_weight,
            "tv_weight": self.tv_weight,
            "criterion": self.criterion,
        }
        if self.provenance:
            out["provenance"] = dict(self.provenance)
        return out


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix ``F F^T / (C*H*W)`` of ``N x C x H x W`` features (Johnson et al. 2016), in float32;
    of ``N x L x C`` tokens, the ``C x C`` matrix over tokens, ``F^T F / (C*L)``."""
    if features.dim() == 3:
        n, positions, c = features.shape
        flat = features.float()
    else:
        n, c, h, w = features.shape
        positions = h * w
        # N x HW x C is a view (no copy) of channels_last features, which is what the loss network produces.
        flat = features.float().permute(0, 2, 3, 1).reshape(n, positions, c)
    # autocast is off so that a bf16 run still forms the products in float32.
    with torch.autocast(features.device.type, enabled=False):
        return torch.bmm(flat.transpose(1, 2), flat).div_(c * positions)


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV: mean absolute difference between horizontal and vertical neighbours."""
    dh = (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
    dw = (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
    return dh + dw


class PerceptualLoss(nn.Module):
    """Pixel, feature-reconstruction, Gram (style) and TV terms over named loss-network layers.

    ``total = pixel_weight*pixel + content_weight*sum_j w_j*content_j + style_weight*sum_j w_j*style_j
    + tv_weight*tv``, with content_j the mean squared (or absolute) feature difference, i.e. averaged over
    C*H*W, and style_j the squared Frobenius distance of Gram matrices. Content and style layers share one
    pass of the loss network per image batch; the target side runs under ``no_grad``.

    Call it on ``output`` and ``target`` (``N x 3 x H x W`` in [0, 1]); ``style_target`` (or a fixed one set
    with ``set_style_target``) replaces ``target`` for the Gram terms. ``last_terms`` holds the named terms
    of the last call, detached, for logging.
    """

    def __init__(self, config: LossConfig, seed: int = 0):
        super().__init__()
        self.config = config
        self.extractor = (
            FeatureExtractor(config.arch, config.layers, config.weights, seed=seed) if config.layers else None
        )
        self._gram_layers: list[str] = []  # the layers of the fixed Gram targets, buffers fixed_gram_<i>
        self.last_terms: dict[str, torch.Tensor] = {}

    @classmethod
    def from_config(cls, cfg: str | Path | Mapping[str, Any] | LossConfig, seed: int = 0) -> PerceptualLoss:
        """Build from a LossConfig, a mapping, or a path to a YAML/JSON layer config."""
        config = cfg if isinstance(cfg, LossConfig) else LossConfig.load(cfg)
        return cls(config, seed=seed)

    @property
    def _fixed_grams(self) -> dict[str, torch.Tensor] | None:
        return {name: getattr(self, f"fixed_gram_{i}") for i, name in enumerate(self._gram_layers)} or None

    @property
    def random_weights(self) -> bool:
        return self.extractor is not None and self.extractor.random_weights

    def _features(self, images: torch.Tensor, layers: list[str] | None = None) -> dict[str, torch.Tensor]:
        if self.extractor is None or layers == []:
            return {}
        return self.extractor(images, layers)

    @torch.no_grad()
    def set_style_target(self, style_image: torch.Tensor | None) -> None:
        """Fix the Gram targets once (style transfer): ``1 x 3 x H x W`` in [0, 1], or None to unset."""
        for i in range(len(self._gram_layers)):
            delattr(self, f"fixed_gram_{i}")
        self._gram_layers = []
        if style_image is None or not self.config.style_layers:
            return
        feats = self._features(style_image)
        # Buffers (not saved in the state dict), so that .to(device) or .to(dtype) moves them with the module.
        for i, name in enumerate(self.config.style_layers):
            self.register_buffer(f"fixed_gram_{i}", gram_matrix(feats[name]), persistent=False)
        self._gram_layers = list(self.config.style_layers)

    def _criterion(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = a.float(), b.float()
        return F.mse_loss(a, b) if self.config.criterion == "mse" else F.l1_loss(a, b)

    def terms(
        self, output: torch.Tensor, target: torch.Tensor, style_target: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Every named term (``pixel``, ``content/<layer>``, ``style/<layer>``, ``tv``) and ``total``."""
        cfg = self.config
        out_feats = self._features(output)
        # The target batch runs only as deep as the layers compared with it: with fixed or separate style
        # targets, that is the content layers alone.
        style_from_target = bool(cfg.style_layers) and self._fixed_grams is None and style_target is None
        with torch.no_grad():
            tgt_feats = self._features(target, [*cfg.content_layers, *(cfg.style_layers if style_from_target else [])])
            if cfg.style_layers and self._fixed_grams is None and style_target is not None:
                style_feats = self._features(style_target, list(cfg.style_layers))
            else:
                style_feats = tgt_feats
        terms: dict[str, torch.Tensor] = {}
        total = output.new_zeros((), dtype=torch.float32)
        if cfg.pixel_weight > 0:
            terms["pixel"] = self._criterion(output, target)
            total = total + cfg.pixel_weight * terms["pixel"]
        for name, w in cfg.content_layers.items():
            terms[f"content/{name}"] = self._criterion(out_feats[name], tgt_feats[name])
            total = total + cfg.content_weight * w * terms[f"content/{name}"]
        for name, w in cfg.style_layers.items():
            target_gram = self._fixed_grams[name] if self._fixed_grams else gram_matrix(style_feats[name])
            diff = gram_matrix(out_feats[name]) - target_gram
            terms[f"style/{name}"] = diff.pow(2).sum(dim=(1, 2)).mean()
            total = total + cfg.style_weight * w * terms[f"style/{name}"]
        if cfg.tv_weight > 0:
            terms["tv"] = total_variation(output.float())
            total = total + cfg.tv_weight * terms["tv"]
        terms["total"] = total
        return terms

    def forward(
        self, output: torch.Tensor, target: torch.Tensor, style_target: torch.Tensor | None = None
    ) -> torch.Tensor:
        terms = self.terms(output, target, style_target)
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        return terms["total"]
