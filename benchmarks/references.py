"""The losses users would otherwise write, as the well-known implementations write them: `make bench`'s references.

- ``Vgg16Slices``: pytorch/examples' fast_neural_style ``vgg.py`` (torchvision VGG-16 ``features`` cut into
  four fixed slices ending at relu1_2, relu2_2, relu3_3, relu4_3; every call runs all four whatever layer
  the loss uses), with its ``utils.normalize_batch`` (ImageNet mean/std; our images are already in [0, 1],
  so its ``div_(255)`` is left out) and ``utils.gram_matrix`` (``view`` + ``bmm``).
- ``Vgg19To``: BasicSR's ``VGGFeatureExtractor`` (``basicsr/archs/vgg_arch.py``): VGG-19 ``features`` cut
  after the deepest requested layer, input normalised, the named outputs collected in a loop.

Both take their weights from a torchvision ``features`` state dict, so they run the very same random
weights as the extractor they are compared with. Nothing here is tuned: these are the baselines.
"""

from __future__ import annotations

from collections import OrderedDict, namedtuple

import torch
import torchvision
from torch import nn

VggOutputs = namedtuple("VggOutputs", ["relu1_2", "relu2_2", "relu3_3", "relu4_3"])


class Vgg16Slices(nn.Module):
    """pytorch/examples fast_neural_style/neural_style/vgg.py, weights from ``state``."""

    def __init__(self, state: dict[str, torch.Tensor]):
        super().__init__()
        vgg_pretrained_features = torchvision.models.vgg16(weights=None).features
        vgg_pretrained_features.load_state_dict(state)
        self.slice1 = nn.Sequential()
        self.slice2 = nn.Sequential()
        self.slice3 = nn.Sequential()
        self.slice4 = nn.Sequential()
        for x in range(4):
            self.slice1.add_module(str(x), vgg_pretrained_features[x])
        for x in range(4, 9):
            self.slice2.add_module(str(x), vgg_pretrained_features[x])
        for x in range(9, 16):
            self.slice3.add_module(str(x), vgg_pretrained_features[x])
        for x in range(16, 23):
            self.slice4.add_module(str(x), vgg_pretrained_features[x])
        for param in self.parameters():
            param.requires_grad = False

    def forward(self, X):
        h = self.slice1(X)
        h_relu1_2 = h
        h = self.slice2(h)
        h_relu2_2 = h
        h = self.slice3(h)
        h_relu3_3 = h
        h = self.slice4(h)
        h_relu4_3 = h
        return VggOutputs(h_relu1_2, h_relu2_2, h_relu3_3, h_relu4_3)


def normalize_batch(batch: torch.Tensor) -> torch.Tensor:
    """pytorch/examples utils.normalize_batch for a batch already in [0, 1]."""
    mean = batch.new_tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)
    std = batch.new_tensor([0.229, 0.224, 0.225]).view(-1, 1, 1)
    return (batch - mean) / std


def gram_matrix(y: torch.Tensor) -> torch.Tensor:
    """pytorch/examples utils.gram_matrix."""
    (b, ch, h, w) = y.size()
    features = y.view(b, ch, w * h)
    features_t = features.transpose(1, 2)
    gram = features.bmm(features_t) / (ch * h * w)
    return gram


class Vgg19To(nn.Module):
    """BasicSR's VGGFeatureExtractor (use_input_norm=True, range_norm=False, no max-pool replacement)."""

    def __init__(self, state: dict[str, torch.Tensor], layer_name_list: list[str], names: list[str]):
        super().__init__()
        self.layer_name_list = layer_name_list
        max_idx = max(names.index(v) for v in layer_name_list)
        features = torchvision.models.vgg19(weights=None).features
        features.load_state_dict(state)
        features = features[: max_idx + 1]
        modified_net = OrderedDict()
        for k, v in zip(names, features, strict=False):
            modified_net[k] = v
        self.vgg_net = nn.Sequential(modified_net)
        self.vgg_net.eval()
        for param in self.parameters():
            param.requires_grad = False
        self.register_buffer("mean", torch.Tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.Tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x):
        x = (x - self.mean) / self.std
        output = {}
        for key, layer in self.vgg_net._modules.items():
            x = layer(x)
            if key in self.layer_name_list:
                output[key] = x.clone()
        return output
