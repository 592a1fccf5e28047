"""Loss networks declared in config (``module:``): layers by module path, hooks, tokens, errors, round trips."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
import torchvision

from layersearch.errors import LayersearchError
from layersearch.lossnet.declared import NORMALIZATIONS, NetworkError, declare, parse_spec
from layersearch.lossnet.features import FeatureExtractor
from layersearch.lossnet.layers import LayerError
from layersearch.lossnet.loss import LossConfig, PerceptualLoss, gram_matrix
from layersearch.lossnet.registry import find_network
from layersearch.lossnet.weights import WeightsError

NETS = '''
import hashlib, torch, torchvision
from torch import nn

CALLS = []

def resnet(**kwargs):
    CALLS.append(kwargs)
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, **kwargs)

class Tokens(nn.Module):
    """A small ViT: patch embedding, a class token, transformer blocks, then a head that must never run."""
    num_prefix_tokens = 1

    def __init__(self, dim=16):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 16, 16)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.blocks = nn.Sequential(*[nn.TransformerEncoderLayer(dim, 2, 32, batch_first=True) for _ in range(2)])
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1)
        t = self.blocks(t)
        t = self.attn(t, t, t)[0]
        return self.head(t[:, 0])

def tokens(dim=16):
    torch.manual_seed(1)
    return Tokens(dim)

class Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("computed past the deepest layer")

class Stops(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.boom = Boom()
        self.armed = False

    def forward(self, x):
        y = self.body(x)
        return self.boom(y) if self.armed else y

def stops():
    return Stops()

def broken():
    raise ValueError("no checkpoint here")

def not_a_module():
    return 42

def with_file(path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    model.weights_file = path
    return model
'''


@pytest.fixture
def nets(tmp_path):
    """The builders above in a file (conftest forgets every network a test declares)."""
    path = tmp_path / "nets.py"
    path.write_text(NETS)
    return path


def hooked(model, paths, images):
    """Outputs of ``paths`` taken by hand with forward hooks (cloned: later in-place ops may write to them)."""
    out, handles = {}, []

    def take(path):
        def hook(module, args, output):
            out.setdefault(path, output.clone())  # and return None: the output itself goes on unchanged
        return hook

    for path in paths:
        handles.append(model.get_submodule(path).register_forward_hook(take(path)))
    with torch.no_grad():
        model(images)
    for h in handles:
        h.remove()
    return out


def normalized(images, how="imagenet"):
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZATIONS[how])
    return (images - mean) / std


def test_cnn_with_skips_equals_features_taken_by_hand(nets):
    declare({"arch": "myres", "module": f"{nets}:resnet"})
    layers = ["relu", "layer1.0.bn2", "layer1.0", "layer2.0.downsample.0", "layer2"]
    ext = FeatureExtractor("myres", layers, weights="builder")
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    expected = hooked(reference, layers, normalized(images))
    got = ext(images)
    assert list(got) == layers
    for name in layers:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5)
    # layer1.0.bn2's output is overwritten by the residual add in place: the tap copied it
    assert "layer1.0.bn2" in ext.network.copied and "layer2" not in ext.network.copied
    # the loss is the mean squared difference of those features
    loss = PerceptualLoss(LossConfig.from_mapping({"loss_net": {"arch": "myres"},
                                                   "content_layers": {"layer1.0.bn2": 1.0, "layer2": 0.5}}))
    target = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    theirs = hooked(reference, ["layer1.0.bn2", "layer2"], normalized(target))
    want = F.mse_loss(expected["layer1.0.bn2"], theirs["layer1.0.bn2"]) + 0.5 * F.mse_loss(expected["layer2"], theirs["layer2"])
    torch.testing.assert_close(loss(images, target), want, rtol=1e-4, atol=1e-6)


def test_token_layers_drop_the_class_token_and_give_gram_over_tokens(nets):
    net = declare({"arch": "mytok", "module": f"{nets}:tokens", "kwargs": {"dim": 16}, "normalize": "clip"})
    rows = {info.name: info for info in net.table}
    assert rows["patch"].tokens == 0 and rows["patch"].stride == 16  # a feature map
    assert rows["blocks.1"].tokens == 196 and rows["blocks.1"].prefix == 1 and rows["blocks.1"].channels == 16
    with pytest.raises(LayerError, match="attn outputs a tuple, not a tensor"):
        net.validate_layers(["attn"])
    images = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(5))
    ext = FeatureExtractor("mytok", ["blocks.0", "blocks.1"], weights="builder")
    ext.train()  # dropout inside the blocks stays off
    torch.manual_seed(1)
    from importlib import util
    spec = util.spec_from_file_location("nets_by_hand", nets)
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reference = module.tokens(16).eval()
    expected = hooked(reference, ["blocks.0", "blocks.1"], normalized(images, "clip"))
    got = ext(images)
    for name in ("blocks.0", "blocks.1"):
        torch.testing.assert_close(got[name], expected[name][:, 1:, :], rtol=1e-4, atol=1e-5)  # 6 patches, no class token
    gram = gram_matrix(got["blocks.1"])
    tokens = expected["blocks.1"][:, 1:, :]
    torch.testing.assert_close(gram, tokens.transpose(1, 2) @ tokens / (16 * tokens.shape[1]), rtol=1e-4, atol=1e-6)
    loss = PerceptualLoss(LossConfig.from_mapping({
        "loss_net": {"arch": "mytok"}, "content_layers": {}, "style_layers": {"blocks.1": 1.0},
        "content_weight": 0.0, "style_weight": 2.0}))
    target = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(6))
    other = hooked(reference, ["blocks.1"], normalized(target, "clip"))["blocks.1"][:, 1:, :]
    want = 2.0 * (gram - other.transpose(1, 2) @ other / (16 * other.shape[1])).pow(2).sum(dim=(1, 2)).mean()
    torch.testing.assert_close(loss(images, target), want, rtol=1e-4, atol=1e-9)


def test_prefix_tokens_given_explicitly_overrides_the_modules_own(nets):
    net = declare({"arch": "mytok0", "module": f"{nets}:tokens", "prefix_tokens": 0})
    assert {info.prefix for info in net.table if info.tokens} == {0}
    assert next(i for i in net.table if i.name == "blocks.0").tokens == 197


def test_the_forward_stops_after_the_deepest_layer(nets):
    net = declare({"arch": "stops", "module": f"{nets}:stops"})
    assert net.layer_names() == ["body.0", "body.1", "body"]  # probed unarmed: `boom` is never called
    net.structure.armed = True  # from now on the forward raises if it gets past `body`
    ext = FeatureExtractor("stops", ["body.0", "body"], weights="builder")
    out = ext(torch.rand(1, 3, 8, 8))
    assert set(out) == {"body.0", "body"}
    with pytest.raises(RuntimeError, match="past the deepest"):
        net.structure(torch.rand(1, 3, 8, 8))  # the network itself does get there


def test_the_network_is_built_once_frozen_and_shared(nets):
    declare({"arch": "myres", "module": f"{nets}:resnet"})
    a = FeatureExtractor("myres", ["layer1"], weights="builder")
    b = FeatureExtractor("myres", ["layer2"], weights="builder")
    assert a.body.model is b.body.model
    model = a.body.model
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    a.train()
    assert not model.training and not model.get_submodule("bn1").training
    module = sys.modules[next(n for n in sys.modules if n.startswith("layersearch_user_") and n.endswith("nets_py"))]
    assert len(module.CALLS) == 1  # the builder ran once
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    a(x)["layer1"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # gradients reach the input


def test_random_and_file_weights(nets, tmp_path):
    declare({"arch": "myres", "module": f"{nets}:resnet"})
    with pytest.warns(UserWarning, match="RANDOM"):
        r0 = FeatureExtractor("myres", ["conv1"], weights="random", seed=0)
    with pytest.warns(UserWarning, match="RANDOM"):
        r1 = FeatureExtractor("myres", ["conv1"], weights="random", seed=1)
    built = FeatureExtractor("myres", ["conv1"], weights="builder")
    w = lambda e: e.body.model.conv1.weight  # noqa: E731
    assert not torch.equal(w(r0), w(r1)) and not torch.equal(w(r0), w(built))
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, tmp_path / "mine.pth")
    loaded = FeatureExtractor("myres", ["conv1"], weights=str(tmp_path / "mine.pth"))
    torch.testing.assert_close(w(loaded), state["conv1.weight"])
    assert loaded.weights_label == "file:mine.pth"
    prov = loaded.network.provenance(str(tmp_path / "mine.pth"))
    assert prov["weights_file"] == "mine.pth" and len(prov["weights_sha256"]) == 64
    del state["fc.bias"]
    torch.save(state, tmp_path / "short.pth")
    with pytest.raises(WeightsError, match="do not fit myres: missing fc.bias"):
        FeatureExtractor("myres", ["conv1"], weights=str(tmp_path / "short.pth"))
    with pytest.raises(NetworkError, match="takes weights builder, random or a file, not imagenet"):
        FeatureExtractor("myres", ["conv1"], weights="imagenet")


def test_a_builder_that_names_its_weights_file_gets_its_sha256_recorded(nets, tmp_path):
    file = tmp_path / "w.bin"
    file.write_bytes(b"weights")
    net = declare({"arch": "withfile", "module": f"{nets}:with_file", "kwargs": {"path": str(file)}})
    import hashlib

    assert net.provenance("builder") == {"source": f"module {nets}:with_file {{'path': '{file}'}}", "weights": "builder",
                                         "weights_file": "w.bin", "weights_sha256": hashlib.sha256(b"weights").hexdigest()}


@pytest.mark.parametrize(("spec", "message"), [
    ({"module": "no_such_pkg_xyz.nets:build"}, "does not import: ModuleNotFoundError"),
    ({"module": "{nets}:missing"}, "has no attribute 'missing'"),
    ({"module": "{nets}:broken"}, "the builder .*:broken of bad raised ValueError: no checkpoint here"),
    ({"module": "{nets}:not_a_module"}, "returned a int, not a torch nn.Module"),
    ({"module": "{nets}:resnet", "normalize": "zscore"}, "normalize='zscore' is unknown; choose one of: imagenet, clip"),
    ({"module": "{nets}:resnet", "prefix_tokens": -1}, "prefix_tokens must be 'auto' or a whole number >= 0"),
    ({"module": "{nets}:resnet", "size": 3}, "unknown key.s. size in loss_net"),
])
def test_bad_declarations_are_one_line(nets, spec, message):
    spec = {"arch": "bad", **{k: v.format(nets=nets) if isinstance(v, str) else v for k, v in spec.items()}}
    with pytest.raises(LayersearchError, match=message) as err:
        declare(spec).validate_layers(["conv1"])
    assert "\n" not in str(err.value)


def test_names_are_checked(nets):
    with pytest.raises(NetworkError, match="vgg16 is a built-in loss network"):
        declare({"arch": "vgg16", "module": f"{nets}:resnet"})
    declare({"arch": "twice", "module": f"{nets}:resnet"})
    declare({"arch": "twice", "module": f"{nets}:resnet"})  # the same declaration again is fine
    with pytest.raises(NetworkError, match="declared twice with different builders"):
        declare({"arch": "twice", "module": f"{nets}:tokens"})
    net = find_network("twice")
    with pytest.raises(LayerError, match=r"unknown layer 'layer2.0.bn3' for twice .*nearest: layer2.0.bn2, layer2.0.bn1"):
        net.validate_layers(["layer2.0.bn3"])
    with pytest.raises(LayerError, match="module layer1.0.relu is called 2 times in one forward"):
        net.validate_layers(["layer1.0.relu"])


def test_a_relative_builder_path_is_made_absolute(nets, monkeypatch):
    monkeypatch.chdir(nets.parent)
    assert parse_spec({"arch": "rel", "module": "nets.py:resnet"}).module == f"{nets}:resnet"


def test_the_layer_config_rebuilds_the_same_loss_in_a_fresh_process(nets, tmp_path):
    config = LossConfig.from_mapping({
        "loss_net": {"arch": "myres", "module": f"{nets}:resnet", "weights": "builder"},
        "content_layers": {"layer1.0.bn2": 1.0, "layer2": 0.5}, "style_layers": {"layer1": 1.0},
        "style_weight": 0.1})
    exported = config.to_dict()
    assert exported["loss_net"] == {"arch": "myres", "module": f"{nets}:resnet", "kwargs": {}, "normalize": "imagenet",
                                    "prefix_tokens": "auto", "weights": "builder"}
    (tmp_path / "best.json").write_text(json.dumps(exported))
    g = torch.Generator().manual_seed(7)
    images, target = torch.rand(2, 3, 48, 48, generator=g), torch.rand(2, 3, 48, 48, generator=g)
    torch.save({"images": images, "target": target}, tmp_path / "batch.pt")
    here = float(PerceptualLoss(config)(images, target))
    code = textwrap.dedent(f"""
        import torch
        from layersearch import PerceptualLoss
        batch = torch.load({str(tmp_path / 'batch.pt')!r})
        print(repr(float(PerceptualLoss.from_config({str(tmp_path / 'best.json')!r})(batch['images'], batch['target']))))
    """)
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert float(there.stdout.strip()) == pytest.approx(here, rel=1e-6)


def test_reading_a_layer_config_leaves_the_networks_default_weights_alone(nets):
    net = declare({"arch": "myres", "module": f"{nets}:resnet"})
    config = LossConfig.from_mapping({"loss_net": {"arch": "myres", "module": f"{nets}:resnet", "weights": "random"},
                                      "content_layers": {"layer1": 1.0}})
    assert config.weights == "random" and net.default_weights == "builder"
    assert LossConfig.from_mapping({"loss_net": {"arch": "myres"}, "content_layers": {"layer1": 1.0}}).weights == "builder"
    declare({"arch": "myres", "module": f"{nets}:resnet", "weights": "random"})  # a config's loss_net: its default
    assert net.default_weights == "random"
