"""FeatureExtractor: named outputs of a frozen, truncated VGG in one forward pass."""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn

from .layers import LayerError, layer_table, validate_layers
from .weights import is_random, shared_features, weights_label

# ImageNet statistics the torchvision VGGs were trained with; applied here and nowhere else.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg_features(arch: str, upto: int | None = None) -> nn.Sequential:
    """The modules of ``torchvision.models.<arch>().features`` up to index ``upto``, with torchvision's init.

    Built here rather than through torchvision so that a truncated network initialises only the layers
    it keeps (the full VGG with its classifier takes seconds to initialise on a CPU). Module indices, and
    so state-dict keys, match torchvision's.
    """
    modules: list[nn.Module] = []
    in_ch = 3
    for info in layer_table(arch)[: None if upto is None else upto + 1]:
        if info.kind == "conv":
            conv = nn.Conv2d(in_ch, info.channels, kernel_size=3, padding=1)
            if conv.weight.device.type != "meta":
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(conv.bias)
            modules.append(conv)
            in_ch = info.channels
        elif info.kind == "relu":
            modules.append(nn.ReLU(inplace=True))
        else:
            modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*modules)


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


class FeatureExtractor(nn.Module):
    """Frozen VGG features addressed by canonical layer names.

    Args:
        arch: ``vgg16`` or ``vgg19``.
        layers: names from ``layersearch.layer_names(arch)``.
        weights: ``imagenet``, ``random`` or a path to a torchvision state dict.
        seed: initialisation seed when ``weights='random'``.

    Calling it on an ``N x 3 x H x W`` RGB batch in [0, 1] returns ``{name: N x C x h x w}`` for exactly
    the requested names. The network is cut after the deepest requested layer, so it holds no parameter
    beyond it. Gradients flow to the input only.
    """

    def __init__(self, arch: str = "vgg16", layers=("relu2_2",), weights: str = "imagenet", seed: int = 0):
        super().__init__()
        layers = validate_layers(arch, layers)
        if not layers:
            raise LayerError("FeatureExtractor needs at least one layer")
        table = {info.name: info for info in layer_table(arch)}
        self.arch = arch
        self.weights = str(weights)
        self.random_weights = is_random(weights)
        self.layers = list(dict.fromkeys(layers))
        self._index_to_name = {table[name].index: name for name in self.layers}
        deepest = max(self._index_to_name)

        # The whole network's weights, shared by every extractor of this process with the same arch,
        # weights and seed (a random init of a truncated network equals the prefix of the whole one's).
        state = shared_features(arch, weights, seed, lambda: vgg_features(arch))
        with torch.device("meta"):
            body = vgg_features(arch, upto=deepest)
        body.load_state_dict({k: v for k, v in state.items() if k in body.state_dict()}, assign=True)
        for name in self.layers:
            # torchvision's ReLUs are in-place: they would overwrite a captured conv output, so the
            # ReLU right after a requested conv must make a new tensor.
            index = table[name].index
            if table[name].kind == "conv" and index + 1 < len(body):
                body[index + 1] = nn.ReLU(inplace=False)
        # channels_last: the layout oneDNN (CPU) and cuDNN (bf16 tensor cores) run convolutions and pooling
        # fastest in; on 2 CPU cores it makes max-pooling ~10x and the convolutions ~10% faster than NCHW.
        self.body = body  # channels_last already (shared_features)
        self.memory_format = torch.channels_last
        # (x - mean) / std as one fused x * scale + shift. It cannot be folded into the first convolution:
        # the zero padding there is zero in normalised space, not in image space.
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / std, persistent=False)
        self.register_buffer("shift", -torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) / std, persistent=False)
        self.requires_grad_(False)
        self.eval()

    def use_memory_format(self, memory_format: torch.memory_format) -> FeatureExtractor:
        """Run in ``memory_format`` (``torch.contiguous_format`` to measure what channels_last brings)."""
        self.body.to(memory_format=memory_format)
        self.memory_format = memory_format
        return self

    @property
    def weights_label(self) -> str:
        return weights_label(self.weights)

    def train(self, mode: bool = True) -> FeatureExtractor:
        # Frozen network: BatchNorm-free, but keep eval semantics even inside a model's .train().
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
        out: dict[str, torch.Tensor] = {}
        for index, module in enumerate(self.body[: max(wanted, default=-1) + 1]):
            x = module(x)
            name = wanted.get(index)
            if name is not None:
                out[name] = x
        return out

    def extra_repr(self) -> str:
        return f"arch={self.arch}, layers={self.layers}, weights={self.weights_label}"
