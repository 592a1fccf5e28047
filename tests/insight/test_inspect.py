"""`layersearch inspect`: the grid and JSON at smoke size, the study's layers, bad input, the default's numbers."""

from __future__ import annotations

import json
import time

import mlflow
import pytest
import torch
from fake_study import fake_study
from helpers import one_error_line, smoke
from PIL import Image

from layersearch.cli import main
from layersearch.insight.inspect import inspect_layers, invert
from layersearch.insight.report import build_report
from layersearch.lossnet.features import FeatureExtractor
from layersearch.search.tracking import StudyTracker, find_experiment

TINY = ["preset=smoke", "inspect.size=32", "inspect.steps=3"]


def test_smoke_inspect_writes_a_labelled_grid_and_json(tmp_path, capsys):
    out = tmp_path / "out"
    args = [*TINY, "inspect.layers=[relu1_2,relu2_2]", f"out_dir={out}", f"paths.studies_dir={tmp_path}/studies"]
    assert main(["inspect", *args]) == 0
    printed = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in printed and "relu2_2" in printed
    data = json.loads((out / "inspect.json").read_text())
    assert data["random_weights"] is True and "RANDOM" in data["note"]
    assert [r["layer"] for r in data["layers"]] == ["relu1_2", "relu2_2"]
    assert data["layers"][1]["style"]["layers"] == ["relu1_2", "relu2_2"]  # cumulative Gram layers
    assert data["layers"][0]["channels"] == 64 and data["layers"][1]["stride"] == 2
    for row in data["layers"]:
        for kind in ("feature", "style"):
            assert {"psnr_y", "lpips", "final_loss"} <= set(row[kind])
    with Image.open(out / "inspect.png") as image:
        image.load()
        assert image.size[0] > 200
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"], "staging folder left behind"


def test_inversion_recovers_a_shallow_layer_better_than_noise():
    extractor = FeatureExtractor("vgg16", ["relu1_2"], "random")
    target = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    start = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)).mul(0.2).add(0.4)
    image, loss = invert(extractor, target, ["relu1_2"], "feature", 30, 0.0, seed=0)
    assert (image - target).pow(2).mean() < 0.1 * (start - target).pow(2).mean()
    assert loss < 0.05


def test_a_named_study_gives_the_layers_and_keeps_a_copy_for_the_report(tmp_path):
    (tmp_path / "studies" / "s").mkdir(parents=True)
    study = fake_study(f"sqlite:///{tmp_path}/studies/s/optuna.db", "s", 2)
    space = dict(study.user_attrs["search_space_config"])
    space["content"] = {**space["content"], "candidates": ["relu1_1", "relu2_1"]}
    study.set_user_attr("search_space_config", space)
    cfg = smoke(*TINY, f"paths.studies_dir={tmp_path}/studies", "study.name=s", f"out_dir={tmp_path}/out",
                f"tracking.uri=sqlite:///{tmp_path}/studies/mlflow.db")
    StudyTracker(cfg.tracking.uri, "s", "sqlite:///x.db")  # the study's MLflow experiment
    result = inspect_layers(cfg)
    assert [r["layer"] for r in result.layers] == ["relu1_1", "relu2_1"]
    kept = tmp_path / "studies" / "s" / "inspect"
    assert (kept / "inspect.png").exists() and json.loads((kept / "inspect.json").read_text())["study"] == "s"
    runs = mlflow.MlflowClient(cfg.tracking.uri).search_runs(
        [find_experiment(cfg.tracking.uri, "s")], "attributes.run_name = 'inspect'")
    assert len(runs) == 1 and runs[0].data.tags["layersearch.random_weights"] == "true"
    report = build_report(cfg).out_dir  # the report embeds the latest inspection
    assert (report / "inspect.png").exists() and "relu2_1" in (report / "report.md").read_text()


@pytest.mark.parametrize("override, message", [
    ("inspect.layers=[relu9_9]", "unknown layer 'relu9_9'"),
    ("inspect.image=/no/such.png", "no such file"),
    ("inspect.image=sample:nothing", "unknown sample image"),
    ("inspect.size=8", "below the stride 16"),
    ("inspect.steps=abc", "inspect.steps must be a whole number"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, override, message):
    args = [*TINY, "inspect.layers=[relu1_2,relu5_3]", override, f"out_dir={tmp_path}/out",
            f"paths.studies_dir={tmp_path}/studies"]
    assert main(["inspect", *args]) == 2
    assert message in one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_default_settings_shallow_layer_reconstructs_better_than_deep(tmp_path):
    """The issue's check: default size and steps, random weights; relu1_2's PSNR-Y above relu5_3's."""
    started = time.perf_counter()
    cfg = smoke(f"out_dir={tmp_path}/out", f"paths.studies_dir={tmp_path}/studies")
    rows = {r["layer"]: r for r in inspect_layers(cfg).layers}
    print(f"inspect default: {time.perf_counter() - started:.0f} s; feature PSNR-Y relu1_2 "
          f"{rows['relu1_2']['feature']['psnr_y']:.2f} dB, relu5_3 {rows['relu5_3']['feature']['psnr_y']:.2f} dB")
    assert rows["relu1_2"]["feature"]["psnr_y"] > rows["relu5_3"]["feature"]["psnr_y"] + 5


def test_inspect_works_on_any_network(tmp_path, capsys):
    out = tmp_path / "out"
    args = [*TINY, "loss_net=resnet50", "inspect.layers=[layer1,layer2]", f"out_dir={out}",
            f"paths.studies_dir={tmp_path}/studies"]
    assert main(["inspect", *args]) == 0
    data = json.loads((out / "inspect.json").read_text())
    assert data["arch"] == "resnet50" and data["random_weights"] is True
    assert [(r["layer"], r["channels"], r["stride"]) for r in data["layers"]] == [("layer1", 256, 4), ("layer2", 512, 8)]
    assert "layer2" in capsys.readouterr().out


def test_inspect_picks_the_network_whose_layers_were_named(tmp_path, capsys):
    def arch_inspected(*overrides: str) -> str:
        out = tmp_path / str(len(list(tmp_path.iterdir())))
        assert main(["inspect", *TINY, *overrides, f"out_dir={out}", f"paths.studies_dir={tmp_path}/studies"]) == 0
        return json.loads((out / "inspect.json").read_text())["arch"]

    # loss_net is vgg16 by default: its own layers go to it, layers only the space's vgg19 has go to vgg19.
    assert arch_inspected("search_space=sr_vgg19_pre_post", "inspect.layers=[conv1_2]") == "vgg16"
    assert arch_inspected("search_space=sr_vgg19_pre_post", "inspect.layers=[relu5_4]") == "vgg19"
    assert "relu5_4: not layers of loss_net vgg16; inspecting vgg19" in capsys.readouterr().out
    assert main(["inspect", *TINY, "loss_net=resnet18", "inspect.layers=[layer9]", f"out_dir={tmp_path}/c"]) == 2
    assert "unknown layer 'layer9' for resnet18" in one_error_line(capsys)
    assert not (tmp_path / "c").exists()
