"""FeatureExtractor: named outputs of a frozen loss network, cut after the deepest one, in one forward pass."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
from torch import nn

from .base import IMAGENET_MEAN, IMAGENET_STD, LayerError
from .registry import loss_network
from .taps import HookTaps
from .weights import is_random, shared_features

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "FeatureExtractor"]


class _ToLayout(torch.autograd.Function):
    """``x.contiguous(memory_format)`` whose gradient goes back in ``x``'s own layout.

    The generator feeding the loss is NCHW on the CPU; a channels_last gradient arriving at its output
    makes its backward ~1.8x slower (measured on the quickstart SRResNet), so the layout change stays
    inside the loss network in both directions.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
        channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        ctx.input_format = torch.channels_last if channels_last else torch.contiguous_format
        return x.contiguous(memory_format=memory_format)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.contiguous(memory_format=ctx.input_format), None


class _Frozen(nn.Sequential):
    """A Sequential that stays in eval mode: batch norm uses its running statistics and never updates them."""

    def train(self, mode: bool = True) -> _Frozen:
        return super().train(False)


class FeatureExtractor(nn.Module):
    """Frozen loss-network features addressed by canonical layer names.

    Args:
        arch: a registered network (``layersearch.ARCHS``: VGG with or without batch norm, AlexNet,
            SqueezeNet 1.1, ResNet-18/50, EfficientNet-B0, ConvNeXt-Tiny; see ``lossnet.registry``).
        layers: names from ``layersearch.layer_names(arch)``.
        weights: ``imagenet``, ``random`` or a path to a torchvision state dict (a declared network:
            ``builder`` too, and a state dict of the whole module).
        seed: initialisation seed when ``weights='random'``.

    Calling it on an ``N x 3 x H x W`` RGB batch in [0, 1] returns ``{name: N x C x h x w}`` (``N x L x C``
    for a declared network's token layers) for exactly the requested names. A built-in network is cut after
    the deepest requested layer, so it holds no parameter beyond it; a declared one (``declared.py``) runs
    its own forward with hooks, stopped there. Either stays in eval mode whatever its parent does.
    Gradients flow to the input only.
    """

    def __init__(self, arch: str = "vgg16", layers: Sequence[str] = ("relu2_2",), weights: str = "imagenet", seed: int = 0):
        super().__init__()
        net = loss_network(arch)
        layers = net.validate_layers(layers)
        if not layers:
            raise LayerError("FeatureExtractor needs at least one layer")
        table = {info.name: info for info in net.table}
        self.network = net
        self.arch = arch
        self.weights = str(weights)
        self.random_weights = is_random(weights)
        self.layers = list(dict.fromkeys(layers))
        self.memory_format = torch.channels_last
        if net.taps_by_hooks:
            # A declared network runs its own forward, hooked on the layers and stopped after the deepest;
            # the frozen module is shared by every extractor of the process that uses it.
            self._index_to_name = {}
            self.body = HookTaps(net.model(self.weights, seed), self.layers, copy=net.copied,
                                 prefix={name: table[name].prefix for name in self.layers})
        else:
            self._index_to_name = {table[name].index: name for name in self.layers}
            self.body = self._trunk(net, seed)
        # (x - mean) / std as one fused x * scale + shift. It cannot be folded into the first convolution:
        # the zero padding there is zero in normalised space, not in image space.
        std = torch.tensor(net.std).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / std, persistent=False)
        self.register_buffer("shift", -torch.tensor(net.mean).view(1, 3, 1, 1) / std, persistent=False)
        self.requires_grad_(False)
        self.eval()

    def _trunk(self, net, seed: int) -> _Frozen:
        # The whole trunk's weights, shared by every extractor of this process with the same arch, weights
        # and seed; this one takes the units up to the deepest layer, built on the meta device and assigned
        # the shared tensors, so building it initialises nothing.
        deepest = max(self._index_to_name)
        state = shared_features(self.arch, self.weights, seed)
        body = _Frozen(*net.trunk(upto=deepest))
        body.load_state_dict(net.unit_state(state, upto=deepest), assign=True)
        for index in self._index_to_name:
            # An in-place op right after a tap (torchvision's ReLU(inplace=True) after a conv or batch norm)
            # would overwrite the tapped tensor: it computes out of place instead, which costs what a clone
            # would. Inside a unit nothing writes to the unit's input (ResNet's residual add writes to the
            # block's own result), so unit outputs need nothing else.
            if index + 1 < len(body) and getattr(body[index + 1], "inplace", False):
                body[index + 1].inplace = False
        # channels_last: the layout oneDNN (CPU) and cuDNN (bf16 tensor cores) run convolutions and pooling
        # fastest in; on 2 CPU cores it makes max-pooling ~10x and the convolutions ~10% faster than NCHW.
        return body  # channels_last already (shared_features)

    def use_memory_format(self, memory_format: torch.memory_format) -> FeatureExtractor:
        """Run in ``memory_format`` (``torch.contiguous_format`` to measure what channels_last brings)."""
        self.body.to(memory_format=memory_format)
        self.memory_format = memory_format
        return self

    @property
    def weights_label(self) -> str:
        return self.network.weights_label(self.weights)

    def train(self, mode: bool = True) -> FeatureExtractor:
        # Frozen network: batch norm must keep its running statistics even inside a model's .train().
        return super().train(False)

    def forward(self, images: torch.Tensor, layers: Collection[str] | None = None) -> dict[str, torch.Tensor]:
        """``{name: N x C x h x w}`` for every layer of the extractor, or only for ``layers`` (a subset).

        With ``layers`` the pass stops after the deepest of them (a style loss with fixed Gram targets needs
        only the content layers of the target batch).
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected an N x 3 x H x W RGB batch in [0, 1], got shape {tuple(images.shape)}")
        wanted = self._index_to_name
        if layers is not None:
            unknown = set(layers) - set(self.layers)
            if unknown:
                raise LayerError(f"layer(s) {', '.join(sorted(unknown))} not in this extractor's {self.layers}")
            wanted = {i: name for i, name in wanted.items() if name in layers}
        x = torch.addcmul(self.shift, _ToLayout.apply(images, self.memory_format), self.scale)
        if self.network.taps_by_hooks:
            return self.body(x, self.layers if layers is None else [n for n in self.layers if n in layers])
        out: dict[str, torch.Tensor] = {}
        for index, module in enumerate(self.body[: max(wanted, default=-1) + 1]):
            x = module(x)
            name = wanted.get(index)
            if name is not None:
                out[name] = x
        return out

    def extra_repr(self) -> str:
        return f"arch={self.arch}, layers={self.layers}, weights={self.weights_label}"
