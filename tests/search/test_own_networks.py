"""A loss network of the user's own (``--config-dir`` declaration) and timm's, through the commands."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import optuna
import pytest
import torch
import yaml
from helpers import one_error_line, run_cli

from layersearch import PerceptualLoss
from layersearch.cli import main
from layersearch.config import load_settings

NETS = '''
import torch
from torch import nn

class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn(self.conv(x)))   # a skip connection

class Small(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU())
        self.block1 = Block(width)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.block2 = Block(2 * width)

    def forward(self, x):
        return self.block2(self.down(self.block1(self.stem(x))))

def small(width=8):
    torch.manual_seed(0)
    return Small(width)

def broken(width=8):
    raise RuntimeError("the checkpoint is not where I said")
'''

SPACE = {"name": "own", "arch": ["vgg16", "small"],
         "content": {"candidates": {"vgg16": ["relu1_2", "relu2_2"], "small": ["stem", "block1", "block2.bn"]},
                     "min_layers": 1, "max_layers": 2, "weight": 1.0},
         "style": None, "pixel_weight": 0.0, "tv_weight": 0.0, "criterion": "mse", "baselines": ["johnson_sr"]}


@pytest.fixture
def conf(tmp_path, monkeypatch):
    """A --config-dir declaring `small` (and `broken`), with a search space over vgg16 and small."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nets.py").write_text(NETS)
    root = tmp_path / "conf"
    (root / "loss_net").mkdir(parents=True)
    (root / "search_space").mkdir()
    (root / "loss_net" / "small.yaml").write_text(
        "arch: small\nmodule: nets.py:small\nkwargs: {width: 8}\nnormalize: imagenet\n")
    (root / "loss_net" / "broken.yaml").write_text("arch: broken\nmodule: nets.py:broken\n")
    (root / "search_space" / "own.yaml").write_text(yaml.safe_dump(SPACE))
    return root


def test_layers_lists_a_declared_network_by_module_path(conf):
    proc = run_cli(["layers", "small", "--config-dir", str(conf)], cwd=conf.parent)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[2:]}
    assert ["stem", "block1", "down", "block2.bn", "block2"] == [p for p in rows if p in
                                                                ("stem", "block1", "down", "block2.bn", "block2")]
    assert rows["down"][1:4] == ["Conv2d", "16", "/2"] and rows["stem.0"][4] == "3x3"
    proc = run_cli(["layers", "nosuch", "--config-dir", str(conf)], cwd=conf.parent)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "unknown loss network 'nosuch'" in proc.stderr and "loss_net/nosuch.yaml" in proc.stderr


def test_the_search_space_takes_the_declaration_from_the_config_dir(conf):
    settings = load_settings(["preset=smoke", "search_space=own"], [str(conf)])
    assert settings.loss_net.arch == "vgg16"
    assert dict(settings.networks["small"]) == {"module": "nets.py:small", "kwargs": {"width": 8}, "normalize": "imagenet"}


def test_a_broken_builder_is_one_line_and_creates_nothing(conf, capsys):
    out = conf.parent / "out"
    assert main(["train", "preset=smoke", "loss_net=broken", f"out_dir={out}", "--config-dir", str(conf)]) == 2
    line = one_error_line(capsys)
    assert "the builder" in line and "broken raised RuntimeError: the checkpoint is not where I said" in line
    assert not out.exists()
    assert main(["sweep", "preset=smoke", "search_space=own", "search_space.arch=[broken]",
                 "search_space.content.candidates=[stem]", "study.name=b", "--config-dir", str(conf)]) == 2
    one_error_line(capsys)
    assert not (conf.parent / "studies" / "b").exists()
    assert main(["train", "preset=smoke", "loss_net=small", "loss_net.normalize=zscore", f"out_dir={out}",
                 "--config-dir", str(conf)]) == 2
    assert "normalize='zscore' is unknown" in one_error_line(capsys)


@pytest.mark.slow
def test_a_declared_network_is_swept_reported_confirmed_and_exported(conf, capsys):
    common = ["preset=smoke", "search_space=own", "study.sampler=random", "study.pruner=none", "--config-dir", str(conf)]
    assert main(["sweep", *common, "study.name=mixed", "study.n_trials=6"]) == 0
    study = optuna.load_study(study_name="mixed", storage="sqlite:///studies/mixed/optuna.db")
    used = {t.user_attrs["layer_config"]["loss_net"]["arch"] for t in study.trials}
    assert used == {"vgg16", "small"}
    assert study.user_attrs["loss_networks"]["small"] == {"source": "module " + str(conf.parent / "nets.py:small")
                                                          + " {'width': 8}", "weights": "random"}
    assert main(["report", *common, "study.name=mixed"]) == 0
    assert "loss-network sources" in (conf.parent / "studies/mixed/report/report.md").read_text()

    own = [*common, "search_space.arch=[small]", "search_space.baselines=[]", "study.name=own"]
    assert main(["sweep", *own, "study.n_trials=3"]) == 0
    assert main(["confirm", *own, "confirm.top_k=1", "confirm.seeds=2"]) == 0
    assert (conf.parent / "studies/own/confirm/confirm.md").is_file()
    assert main(["export", *own]) == 0
    capsys.readouterr()
    best = yaml.safe_load((conf.parent / "studies/own/best.yaml").read_text())
    assert best["loss_net"]["arch"] == "small" and best["loss_net"]["module"].endswith("nets.py:small")
    g = torch.Generator().manual_seed(0)
    batch = {"output": torch.rand(2, 3, 32, 32, generator=g), "target": torch.rand(2, 3, 32, 32, generator=g)}
    torch.save(batch, conf.parent / "batch.pt")
    here = float(PerceptualLoss.from_config(conf.parent / "studies/own/best.yaml")(batch["output"], batch["target"]))
    code = textwrap.dedent("""
        import json, torch, warnings
        warnings.simplefilter("ignore")
        from layersearch import PerceptualLoss
        batch = torch.load("batch.pt")
        print(json.dumps(float(PerceptualLoss.from_config("studies/own/best.yaml")(batch["output"], batch["target"]))))
    """)
    there = subprocess.run([sys.executable, "-c", code], cwd=conf.parent, capture_output=True, text=True, timeout=300)
    assert there.returncode == 0, there.stderr
    assert json.loads(there.stdout) == pytest.approx(here, rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(("model", "candidates"), [("resnet18", "[layer1,layer2.0.bn2,layer3]"),
                                                     ("vit_tiny_patch16_224", "[blocks.1,blocks.4.norm1,blocks.7]")])
def test_a_smoke_sweep_over_a_timm_model(tmp_path, monkeypatch, capsys, model, candidates):
    pytest.importorskip("timm")
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "preset=smoke", "loss_net=timm", f"loss_net.timm={model}", "search_space=sr_relu",
                     f"search_space.arch=[timm_{model}]", f"search_space.content.candidates={candidates}",
                 "search_space.baselines=[]", "study.name=t", "study.n_trials=3"]) == 0
    out = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in out
    study = optuna.load_study(study_name="t", storage="sqlite:///studies/t/optuna.db")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3
    assert {t.user_attrs["layer_config"]["loss_net"]["timm"] for t in complete} == {model}
