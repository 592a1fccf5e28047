"""`layersearch train` and `layersearch score` as users run them: the installed console script once each,
the rest in-process through `layersearch.cli.main` (same code path, without ~10 s of imports per run)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import console_script, smoke, user_lines
from PIL import Image

from layersearch.cli import main
from layersearch.config import config_groups
from layersearch.trial.metrics import PSNR_CAP_DB
from layersearch.trial.train import precision_used, resolve_device


def write_png(path: Path, h: int, w: int, seed: int = 0, suffix: str | None = None) -> np.ndarray:
    """A random RGB image written losslessly (the format follows the file name)."""
    rng = np.random.default_rng(seed)
    pixels = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


# --- the installed console script, from another directory -----------------------------------------------


@pytest.fixture(scope="module")
def console_runs(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """One `train` and one `score` run of the installed script, started together to share the import time."""
    repo = Path(__file__).resolve().parents[1]
    train_cwd, score_cwd = tmp_path_factory.mktemp("train_cwd"), tmp_path_factory.mktemp("score_cwd")
    assert repo not in train_cwd.parents and repo not in score_cwd.parents
    # Same pixels, different lossless formats: names must match without their extension.
    for i, (pred_ext, target_ext) in enumerate([(".png", ".bmp"), (".png", ".tif")]):
        pixels = write_png(score_cwd / "pred" / f"img{i}{pred_ext}", 40, 48, seed=i)
        (score_cwd / "target").mkdir(exist_ok=True)
        Image.fromarray(pixels).save(score_cwd / "target" / f"img{i}{target_ext}")
    write_png(score_cwd / "pred" / "extra.png", 40, 48, seed=9)  # no partner: reported, not scored

    env = {k: v for k, v in os.environ.items() if k not in ("LAYERSEARCH_DEBUG", "PYTHONPATH")}
    env["OMP_NUM_THREADS"] = "1"  # two processes on a small machine
    script = console_script()
    commands = {
        "train": ([script, "train", "preset=smoke", "out_dir=run"], train_cwd),
        "score": (
            [
                script,
                "score",
                "preset=smoke",
                "pred_dir=pred",
                "target_dir=target",
                "scale=4",
                "out_dir=scores",
            ],
            score_cwd,
        ),
    }
    procs = {
        name: (
            cwd,
            subprocess.Popen(
                cmd, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            ),
        )
        for name, (cmd, cwd) in commands.items()
    }
    results = {}
    for name, (cwd, proc) in procs.items():
        try:
            out, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results[name] = (cwd, subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def assert_succeeded_with_random_banner(proc) -> None:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "RANDOM WEIGHTS" in proc.stdout


@pytest.mark.slow
def test_console_train_writes_a_labelled_output_folder(console_runs):
    cwd, proc = console_runs["train"]
    assert_succeeded_with_random_banner(proc)
    precision = precision_used(smoke("trainer.precision=auto").trainer, resolve_device("auto"))
    assert f"weights: loss net vgg16/random, LPIPS alex/random; trained in {precision}" in proc.stdout
    assert "bicubic" in proc.stdout and "psnr_y" in proc.stdout  # the table has the baseline row
    out = cwd / "run"
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "metrics.json", "preview.png"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["random_weights"] is True
    assert metrics["precision"] == precision
    assert metrics["weights"] == {"loss_net": "vgg16/random", "lpips": "alex/random"}
    assert {"lpips", "psnr_y", "ssim_y"} <= set(metrics["metrics"])
    assert yaml.safe_load((out / "config.yaml").read_text())["content_layers"] == {"relu2_2": 1.0}
    assert [p.name for p in cwd.iterdir()] == ["run"]  # nothing else written into the working directory


@pytest.mark.slow
def test_console_score_matches_names_without_extension(console_runs):
    cwd, proc = console_runs["score"]
    assert_succeeded_with_random_banner(proc)
    assert "ignored 1 files without a partner: extra" in proc.stdout
    result = json.loads((cwd / "scores" / "scores.json").read_text())
    assert sorted(result["images"]) == ["img0.png", "img1.png"]
    assert result["n_images"] == 2 and result["unmatched"] == ["extra"]
    for scores in [result["mean"], *result["images"].values()]:
        assert scores["psnr_y"] == PSNR_CAP_DB
        assert scores["ssim_y"] == 1.0
        assert scores["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert result["protocol"]["shave"] == 4
    assert result["random_weights"] is True and result["weights"] == {"lpips": "alex/random"}


# --- in-process runs ------------------------------------------------------------------------------------


def test_train_style_in_process_default_out_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "preset=smoke", "task=style", "loss=johnson_style", "trainer.steps=2"]) == 0
    stdout = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in stdout and "content_lpips" in stdout
    (out,) = (tmp_path / "outputs" / "train").iterdir()  # the default: outputs/train/<time>
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "style" and metrics["baseline"] is None
    assert {"content_lpips", "style_distance", "train/total"} <= set(metrics["metrics"])
    assert set(yaml.safe_load((out / "config.yaml").read_text())["style_layers"]) == {
        "relu1_2",
        "relu2_2",
        "relu3_3",
        "relu4_3",
    }
    assert (out / "preview.png").stat().st_size > 0


def test_score_in_process_scores_a_degraded_copy_below_the_cap(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    pixels = write_png(tmp_path / "target" / "a.png", 48, 48)
    noisy = np.clip(pixels.astype(int) + np.random.default_rng(1).integers(-20, 21, pixels.shape), 0, 255)
    (tmp_path / "pred").mkdir()
    Image.fromarray(noisy.astype(np.uint8)).save(tmp_path / "pred" / "a.png")
    assert main(["score", "preset=smoke", "pred_dir=pred", "target_dir=target", "scale=0"]) == 0
    (out,) = (tmp_path / "outputs" / "score").iterdir()
    result = json.loads((out / "scores.json").read_text())
    assert 20 < result["mean"]["psnr_y"] < 40
    assert 0 < result["mean"]["ssim_y"] < 1 and result["mean"]["lpips"] > 0
    assert result["images"]["a.png"] == result["mean"]
    assert f"wrote {Path('outputs') / 'score' / out.name / 'scores.json'}" in capsys.readouterr().out


# --- bad input: exit 2, one line, nothing left behind -----------------------------------------------------


def _folders(root: Path) -> None:
    write_png(root / "good" / "g0.png", 80, 80, seed=0)
    write_png(root / "good" / "g1.png", 80, 80, seed=1)
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("no images here")
    write_png(root / "small" / "s0.png", 20, 24)
    write_png(root / "broken" / "fine.png", 80, 80)
    data = (root / "good" / "g0.png").read_bytes()
    (root / "broken" / "cut.png").write_bytes(data[: len(data) // 2])


def _loss_file(root: Path) -> None:
    (root / "bad_loss.yaml").write_text("content_layers: {relu9_9: 1}\n")


def _out_dir_taken(root: Path) -> None:
    (root / "run").mkdir()
    (root / "run" / "keep.txt").write_text("mine")


def _score_folders(root: Path) -> None:
    write_png(root / "pred" / "a.png", 40, 48)
    write_png(root / "target" / "a.png", 32, 48)
    write_png(root / "pred2" / "x.png", 40, 48)
    write_png(root / "target2" / "y.png", 40, 48)
    write_png(root / "pred3" / "a.png", 40, 48)
    write_png(root / "pred3" / "a.bmp", 40, 48)


FOLDER = ["data=folder", "data.val_dir=good"]
TRAIN_CASES: dict[str, tuple[Callable[[Path], None] | None, list[str], list[str]]] = {
    # name: (setup, extra args, substrings of the error line)
    "missing data folder": (_folders, [*FOLDER, "data.train_dir=nowhere"], ["nowhere", "does not exist"]),
    "data folder not given": (_folders, ["data=folder"], ["data.train_dir"]),
    "empty data folder": (_folders, [*FOLDER, "data.train_dir=empty"], ["empty", "no images"]),
    "truncated image": (_folders, [*FOLDER, "data.train_dir=broken"], ["cut.png", "cannot read"]),
    "images smaller than the crop": (_folders, [*FOLDER, "data.train_dir=small"], ["s0.png", "32px crop"]),
    "validation smaller than the crop": (
        _folders,
        ["data=folder", "data.train_dir=good", "data.val_dir=small"],
        ["s0.png", "64px crop"],
    ),
    "missing style image": (
        None,
        ["task=style", "loss=johnson_style", "task.style_image=nope.png"],
        ["nope.png"],
    ),
    "invalid layer in loss_file": (
        _loss_file,
        ["loss_file=bad_loss.yaml"],
        ["bad_loss.yaml", "relu9_9", "relu2_2"],
    ),
    "missing loss_file": (None, ["loss_file=absent.yaml"], ["absent.yaml", "does not exist"]),
    "unknown task": (None, ["task=foo"], ["foo", "sr_x4"]),
    "unknown key": (None, ["trainer.stepz=3"], ["stepz"]),
    "a GPU this machine lacks": (None, ["trainer.device=cuda:99"], ["cuda:99"]),  # no CUDA, or no 100th GPU
    "out_dir not empty": (_out_dir_taken, [], ["run", "not empty"]),
    "loss blows up": (None, ["trainer.lr=1e10"], ["step", "trainer.lr"]),
    "learning rate not a number": (None, ["trainer.lr=abc"], ["trainer.lr", "number", "abc"]),
    "steps not whole": (None, ["trainer.steps=2.5"], ["trainer.steps", "whole number"]),
    "unknown LPIPS net": (None, ["metrics.lpips.net=resnet"], ["metrics.lpips.net", "resnet", "alex"]),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_bad_input(case, tmp_path, monkeypatch, capsys):
    setup, args, expected = TRAIN_CASES[case]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LAYERSEARCH_DEBUG", raising=False)
    if setup:
        setup(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["train", "preset=smoke", "out_dir=run", *args]) == 2
    lines = user_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    (line,) = lines
    assert line.startswith("layersearch train: ") and "Traceback" not in line
    for text in expected:
        assert text in line, line
    # Nothing new in the working directory: no out_dir, no .run.* staging folder, no outputs/.
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if case == "out_dir not empty":
        assert [p.name for p in (tmp_path / "run").iterdir()] == ["keep.txt"]


SCORE_CASES = {
    "sizes differ": (["pred_dir=pred", "target_dir=target"], ["a.png", "48x40", "48x32", "sizes must match"]),
    "no matching names": (["pred_dir=pred2", "target_dir=target2"], ["pred2", "target2", "match"]),
    "two files, one name": (["pred_dir=pred3", "target_dir=target"], ["a.bmp", "a.png", "pred3"]),
    "missing folder": (["pred_dir=nowhere", "target_dir=target"], ["nowhere", "does not exist"]),
    "folders not given": (["pred_dir=pred"], ["target_dir"]),
}


@pytest.mark.parametrize("case", list(SCORE_CASES))
def test_score_bad_input(case, tmp_path, monkeypatch, capsys):
    args, expected = SCORE_CASES[case]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LAYERSEARCH_DEBUG", raising=False)
    _score_folders(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["score", "preset=smoke", "scale=4", "out_dir=scores", *args]) == 2
    lines = user_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    assert lines[0].startswith("layersearch score: ")
    for text in expected:
        assert text in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# --- --cfg job and --help -------------------------------------------------------------------------------


def test_cfg_job_prints_the_composed_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "preset=smoke", "trainer.steps=7", "loss=esrgan", "--cfg", "job"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["trainer"]["steps"] == 7 and cfg["trainer"]["batch_size"] == 2  # override and preset applied
    assert cfg["loss_net"] == {"arch": "vgg19", "weights": "random"}  # loss=esrgan switches the net
    assert cfg["loss"]["content_layers"] == {"conv5_4": 1.0}
    assert cfg["task"]["_target_"] == "layersearch.trial.tasks.SuperResolution"
    assert list(tmp_path.iterdir()) == []  # printing the config runs nothing


@pytest.mark.parametrize("command", ["train", "score"])
def test_help_lists_the_config_groups(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    groups = config_groups()
    assert {"task", "data", "model", "trainer", "loss_net", "loss", "metrics", "preset"} <= set(groups)
    lines = out.splitlines()
    for group, options in groups.items():
        (line,) = [ln for ln in lines if ln.split()[:1] == [group]]
        assert all(option in line for option in options), line
    assert "sr_x4" in out and "johnson_sr" in out and "smoke" in out
