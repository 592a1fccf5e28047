"""Quiet output: installing prints no setuptools warning; a sweep prints no MLflow INFO line, no MLflow
"View run" link, and each warning once (issue 18)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]


def test_building_the_wheel_prints_no_setuptools_warning_and_ships_every_config(tmp_path):
    # --no-build-isolation: the venv's setuptools, no index needed; the same backend `pip install -e .` runs.
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                            str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    output = built.stdout + built.stderr
    assert "BuildBackendWarning" not in output and "SetuptoolsWarning" not in output, output[-3000:]
    [wheel] = tmp_path.glob("layersearch-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("layersearch/conf/")}
    expected = {f"layersearch/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert expected and expected <= shipped


def test_an_editable_install_prints_no_setuptools_notice(tmp_path):
    # PEP 660's hook, as `pip install -e .` calls it. A layout that is not a plain .pth (a package-dir mapping)
    # makes setuptools print "BuildBackendWarning: Editable installation ... Please be careful ...".
    built = subprocess.run([sys.executable, "-c", "import sys, setuptools.build_meta as b; b.build_editable(sys.argv[1])",
                            str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    output = built.stdout + built.stderr
    assert "Warning" not in output and "careful" not in output, output[-3000:]
    [wheel] = tmp_path.glob("layersearch-*.whl")
    assert any(n.endswith(".pth") for n in zipfile.ZipFile(wheel).namelist())


def test_a_sweep_prints_no_mlflow_info_and_each_warning_once(tmp_path):
    # Progress bars and the quickstart's sizes: the setting where the random-weights warning came once per
    # trial (CPython forgets a "once" warning whenever warning filters change, and a sweep changes them).
    done = run_cli(["sweep", "preset=quickstart", "loss_net.weights=random", "metrics.lpips.weights=random",
                    "study.name=quiet", "study.n_trials=3", "trainer.steps=4", "trainer.eval_every=2",
                    "task.val_crop=32", "trainer.preview_images=1"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert " INFO " not in output and "View run" not in output and "View experiment" not in output
    assert output.count("warning: vgg16 uses RANDOM weights") == 1
    assert output.count("warning: alexnet uses RANDOM weights") == 1


def test_debug_shows_every_warning_with_where_it_came_from(capsys, monkeypatch):
    from layersearch import cli

    for debug in ("", "1"):
        monkeypatch.setenv("LAYERSEARCH_DEBUG", debug)
        for _ in range(2):
            cli._warning_line(UserWarning("same words"), UserWarning, "x.py", 3)
    err = capsys.readouterr().err.splitlines()
    assert err == ["warning: same words", "warning: same words (x.py:3)", "warning: same words (x.py:3)"]
