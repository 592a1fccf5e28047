"""The benchmark scripts run end to end at toy sizes, so they are known to work when a GPU is lent."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def _clone(tmp_path: Path) -> Path:
    """A fresh clone of this checkout's HEAD: what a lent GPU machine gets (no .venv, nothing built)."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, capture_output=True, timeout=300)
    assert not (clone / ".venv").exists()
    return clone


@pytest.mark.slow  # a fresh clone makes its own .venv (2-3 min from pip's cache), then the dry run (~3 min)
def test_gpu_script_dry_run_from_a_fresh_clone_prints_every_section(tmp_path):
    clone = _clone(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV")}  # the machine's python3
    proc = subprocess.run(["bash", "benchmarks/gpu.sh", "--dry"], cwd=clone, capture_output=True, text=True,
                          timeout=1500, env={**env, "PYTHONUNBUFFERED": "1"})
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert (clone / ".venv/.installed").exists() and "DRY RUN" in out
    for heading in ("== environment", "== CUDA tests", "== step time", "== trials per hour", "== one command trial",
                    "== torch.compile, last"):
        assert heading in out, heading
    assert re.search(r"^\d+ skipped", out, re.MULTILINE)  # the CUDA tests ran (and skip on the CPU)
    for variant in ("fp32", "bf16", "fp32 + channels_last", "bf16 + channels_last"):
        assert any(re.fullmatch(rf"{re.escape(variant)}\s+[\d.]+\s+([\d.]+x|n/a)", line) for line in out.splitlines()), variant
    compiled = [line for line in out.splitlines() if line.startswith("bf16 + channels_last + compile")]
    failed = [line for line in out.splitlines() if line.startswith("torch.compile failed here")]
    assert compiled or failed  # a number, or the one line saying why not
    rows = [line.split() for line in out.splitlines() if line[:2] in ("1 ", "2 ", "4 ")]
    assert [int(r[0]) for r in rows] == [1, 2, 4]
    assert all(float(r[1]) > 0 and float(r[2]) > 0 and r[3].endswith("x") for r in rows)
    assert rows[0][3] == "1.00x"
    assert re.search(r"the command trial takes [\d.]+x", out)
    assert "FAILED" not in proc.stderr


@pytest.mark.slow  # a fresh clone and a venv that borrows this one's packages: ~1 min
def test_gpu_environment_borrows_the_torch_of_a_python_that_has_one(tmp_path):
    # A lent GPU machine's python3 is itself a venv holding torch (/opt/torch/.venv): the clone's .venv must use
    # that torch, not install another, and the clone's own code.
    clone = _clone(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    proc = subprocess.run(["bash", "benchmarks/gpu_env.sh"], cwd=clone, capture_output=True, text=True,
                          timeout=900, env={**env, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    import torch

    where = subprocess.run([str(clone / ".venv/bin/python"), "-c",
                            "import torch, layersearch; print(torch.__file__); print(layersearch.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert where.returncode == 0, where.stderr[-2000:]
    torch_file, package_file = where.stdout.split()
    assert torch_file == torch.__file__  # borrowed, not installed again
    assert Path(package_file).resolve().is_relative_to(clone.resolve())
    assert (clone / ".venv/bin/layersearch").exists()


def test_gpu_script_refuses_unknown_arguments():
    proc = subprocess.run(["bash", "benchmarks/gpu.sh", "--fast"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage" in proc.stderr


@pytest.mark.slow
def test_make_bench_dry_run_prints_every_section():
    out = _run([sys.executable, "benchmarks/bench.py", "--dry"], timeout=900).stdout
    for heading in ("## 1. Machine convolution throughput", "## 2. Loss step vs reference",
                    "## 3. Peak memory", "## 4. Quickstart SR trial", "## 5. Sweep time outside training",
                    "## 6. Loss networks", "## 7. Your own network"):
        assert heading in out
    from layersearch import ARCHS

    for arch in ARCHS:  # one row per network, with its time relative to VGG-16 relu2_2
        assert re.search(rf"^\| {arch} \| \S+ \| \d+ \| \d+ \| \*\*[\d.]+x\*\* \| [\d.]+-[\d.]+ \| [\d.]+ \| \d+ \|", out, re.M), arch
    for loss in ("relu2_2 (Johnson SR)", "relu2_2 + relu4_3", "Johnson style (Gram)", "ESRGAN conv5_4 (VGG-19)"):
        row = next(line for line in out.splitlines() if line.startswith(f"| {loss} |") and "x** |" in line)
        assert row.endswith("| yes |"), row  # ours and the reference compute the same loss value
    for network in ("resnet18", "vgg16"):  # declared through module: vs the built-in cut, same weights, same value
        assert re.search(rf"^\| {network} \| \S+ = \S+ \| [\d.]+ \| [\d.]+ \| \*\*[\d.]+x\*\* \| [\d.]+-[\d.]+ \| yes \|$",
                         out, re.M), network


@pytest.mark.slow
def test_precision_benchmark_prints_both_precisions_and_the_rankings():
    out = _run([sys.executable, "benchmarks/precision.py", "--seeds", "2", "trainer.steps=2", "trainer.eval_every=2",
                "task.crop=32", "task.val_crop=64", "model.channels=8", "model.n_blocks=1"], timeout=900).stdout
    assert "RANDOM weights" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.endswith("x") and "psnr" not in line}
    assert set(rows) == {"pixel", "relu2_2", "relu4_3", "relu1_2+relu2_2+pixel"}
    for row in rows.values():
        fp32, bf16, diff = (float(v) for v in row[1:4])
        assert diff == pytest.approx(bf16 - fp32, abs=2e-3)
    assert sum(line.startswith("ranking by mean ") for line in out.splitlines()) == 2


@pytest.mark.slow
def test_pruning_benchmark_compares_both_pruners_for_each_sampler_seed(tmp_path):
    report = tmp_path / "pruning.txt"
    out = _run([sys.executable, "benchmarks/pruning.py", "--sampler-seeds", "2", "--out", str(report),
                "--keep", str(tmp_path / "studies"),
                "study.n_trials=4", "study.n_startup_trials=1", "trainer.steps=6", "trainer.eval_every=2",
                "study.warmup_fraction=0", "task.crop=32", "task.val_crop=64", "model.channels=8", "model.n_blocks=1"],
               timeout=1200).stdout
    assert "RANDOM WEIGHTS" in out and report.read_text().strip() in out
    # 1. the correlation table: one row per evaluation step, a cell per sampler seed, mean and min.
    table = [line.split() for line in out.splitlines() if re.match(r"^\s+[246] ", line)]
    assert [row[0] for row in table] == ["2", "4", "6"]
    cell = re.compile(r"([+-]\d\.\d\d) \(n=")
    for row in table:
        assert row[-2] == format(statistics.fmean(float(v) for v in cell.findall(" ".join(row))), "+.2f")
    assert float(table[-1][-1]) == 1.0  # the last evaluation is the final value: rho 1
    # 2. steps: the unpruned arm ran every step of every trial (4 first runs + 2 baseline repeats).
    rows = [line.split() for line in out.splitlines() if line.startswith(("  median ", "  none "))]
    assert [r[0] for r in rows] == ["none", "median", "none", "median"]
    for row in rows:
        trials, complete, pruned, failed, steps = (int(v) for v in row[1:6])
        assert complete + pruned == 4 and complete + pruned + failed == trials
        assert row[0] == "median" or (pruned == 0 and steps == (trials + 2) * 6)
    saved = [1 - int(rows[i + 1][5]) / int(rows[i][5]) for i in (0, 2)]
    assert re.findall(r"steps saved: (\d+)%", out) == [f"{100 * v:.0f}" for v in saved]
    assert f"mean {100 * sum(saved) / 2:.0f}% (goal >= 40%)" in out
    # 3. the answer kept, per sampler seed.
    kept = re.findall(r"top-3 configs in common (\d)/3 exactly, (\d)/3 as layer choices; per-layer effects with "
                      r"the same sign (\d+)/(\d+)", out)
    assert len(kept) == 2 and all(exact <= layers and int(a) <= int(b) for exact, layers, a, b in kept)
    # each candidate layer's verdict in both studies (the quickstart space has five VGG-16 layers).
    verdict_rows = [line.split()[0] for line in out.splitlines() if line.startswith("    vgg16/")]
    assert len(verdict_rows) == 2 * 5
    # --keep: the four studies stay for later reading.
    assert len(list((tmp_path / "studies").glob("bench_pruning_*/optuna.db"))) == 4
