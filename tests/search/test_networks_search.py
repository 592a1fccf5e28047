"""Loss networks beyond VGG through the commands: the metric-independence warning, export, a weights file of
another network, a smoke sweep over networks."""

from __future__ import annotations

from dataclasses import replace

import optuna
import pytest
import torch
import torchvision
import yaml
from helpers import one_error_line, smoke

from layersearch import PerceptualLoss
from layersearch.cli import main
from layersearch.search.loop import prepare_study


def test_the_sweep_warns_once_when_lpips_grades_with_a_searched_network(tmp_path):
    lines: list[str] = []
    cfg = smoke("search_space=sr_networks", "search_space.arch=[alexnet,resnet18]", "study.name=w",
                f"paths.studies_dir={tmp_path}")
    prepare_study(cfg, log=lines.append, tracker=False)
    warned = [line for line in lines if "backbone of LPIPS" in line]
    assert warned == ["warning: alexnet is both a loss network searched and the backbone of LPIPS "
                      "(metrics.lpips.net=alex): lpips rewards alexnet trials for matching its own features; "
                      "metrics.lpips.net=vgg would grade independently"]
    lines.clear()
    prepare_study(replace(cfg, metrics=replace(cfg.metrics, lpips=replace(cfg.metrics.lpips, net="vgg"))),
                  log=lines.append, tracker=False)
    assert not [line for line in lines if "LPIPS" in line]


def study_with(tmp_path, layer_config: dict) -> str:
    storage = f"sqlite:///{tmp_path}/studies/net/optuna.db"
    (tmp_path / "studies" / "net").mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name="net", storage=storage, directions=["minimize"], load_if_exists=True)
    study.set_user_attr("objectives", ["lpips"])
    trial = study.ask()
    trial.set_user_attr("layer_config", layer_config)
    study.tell(trial, 0.1 if layer_config["loss_net"]["arch"] != "vgg19_bn" else 0.05)
    return "study.name=net"


def test_basicsr_export_refuses_other_networks_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    name = study_with(tmp_path, {"loss_net": {"arch": "resnet50", "weights": "random"}, "content_layers": {"layer2": 1.0}})
    assert main(["export", name, "export.format=basicsr"]) == 2
    line = one_error_line(capsys)
    assert "BasicSR's PerceptualLoss takes VGG only" in line and "resnet50" in line
    assert not (tmp_path / "studies/net/best.basicsr.yml").exists()
    # As yaml it exports, with its network, and PerceptualLoss loads it.
    assert main(["export", name]) == 0
    best = tmp_path / "studies/net/best.yaml"
    assert yaml.safe_load(best.read_text())["loss_net"]["arch"] == "resnet50"
    loss_fn = PerceptualLoss.from_config(best)
    images = torch.rand(1, 3, 32, 32)
    assert loss_fn.extractor.arch == "resnet50" and loss_fn(images, images).item() == 0.0


def test_basicsr_export_takes_vgg_with_batch_norm(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = study_with(tmp_path, {"loss_net": {"arch": "vgg19_bn", "weights": "random"},
                                 "content_layers": {"bn5_4": 1.0, "relu2_2": 0.5}, "criterion": "l1"})
    assert main(["export", name, "export.format=basicsr"]) == 0
    block = yaml.safe_load((tmp_path / "studies/net/best.basicsr.yml").read_text())["perceptual_opt"]
    assert block["vgg_type"] == "vgg19_bn" and block["layer_weights"] == {"bn5_4": 1.0, "relu2_2": 0.5}


@pytest.mark.slow
def test_smoke_sweep_over_networks_completes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    archs = "[resnet18,vgg16_bn,efficientnet_b0,convnext_tiny,squeezenet1_1]"
    code = main(["sweep", "preset=smoke", "search_space=sr_networks", f"search_space.arch={archs}",
                 "search_space.baselines=[]", "study.name=nets", "study.n_trials=10", "study.sampler=random",
                 "study.pruner=none"])
    out = capsys.readouterr().out
    assert code == 0, out[-2000:]
    assert "squeezenet1_1 is both a loss network searched and the backbone of LPIPS" not in out  # LPIPS is alex
    study = optuna.load_study(study_name="nets", storage=f"sqlite:///{tmp_path}/studies/nets/optuna.db")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 10
    used = {t.user_attrs["layer_config"]["loss_net"]["arch"] for t in complete}
    assert len(used) >= 3 and used <= set(archs.strip("[]").split(","))
    assert main(["export", "preset=smoke", "study.name=nets", "export.pareto=true"]) == 0
    # The report reads a study of several networks (its per-network content is the report's own tests' matter).
    assert main(["report", "preset=smoke", "search_space=sr_networks", f"search_space.arch={archs}",
                 "study.name=nets"]) == 0
    assert (tmp_path / "studies/nets/report/index.html").is_file()


def test_a_weights_file_of_another_network_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with torch.device("meta"):
        shapes = torchvision.models.resnet50().state_dict()
    torch.save({k: torch.zeros(v.shape, dtype=v.dtype) for k, v in shapes.items()}, tmp_path / "mine.pth")
    loss_file = tmp_path / "loss.yaml"
    loss_file.write_text(yaml.safe_dump({"loss_net": {"arch": "resnet18", "weights": str(tmp_path / "mine.pth")},
                                         "content_layers": {"layer1": 1.0}}))
    assert main(["train", "preset=smoke", f"loss_file={loss_file}"]) == 2
    line = one_error_line(capsys)
    assert line.startswith("layersearch train: weights file:mine.pth do not fit resnet18: parameter ")
    assert line.endswith("they seem to be for resnet50")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.yaml", "mine.pth"]  # nothing created
