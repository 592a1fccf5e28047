"""The benchmark scripts run end to end at toy sizes, so they are known to work when a GPU is lent."""

from __future__ import annotations

import os
import re
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


@pytest.mark.slow
def test_gpu_script_dry_run_prints_every_section():
    out = _run(["bash", "benchmarks/gpu.sh", "--dry"], timeout=900).stdout
    assert "DRY RUN" in out
    assert "== step time" in out and "== trials per hour" in out
    for variant in ("fp32", "bf16", "bf16 + channels_last", "bf16 + channels_last + compile"):
        assert any(re.fullmatch(rf"{re.escape(variant)}\s+[\d.]+\s+([\d.]+x|n/a)", line) for line in out.splitlines()), variant
    rows = [line.split() for line in out.splitlines() if line[:2] in ("1 ", "2 ", "4 ")]
    assert [int(r[0]) for r in rows] == [1, 2, 4]
    assert all(float(r[1]) > 0 and float(r[2]) > 0 for r in rows)


def test_gpu_script_refuses_unknown_arguments():
    proc = subprocess.run(["bash", "benchmarks/gpu.sh", "--fast"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage" in proc.stderr


@pytest.mark.slow
def test_make_bench_dry_run_prints_every_section():
    out = _run([sys.executable, "benchmarks/bench.py", "--dry"], timeout=900).stdout
    for heading in ("## 1. Machine convolution throughput", "## 2. Loss step vs reference",
                    "## 3. Peak memory", "## 4. Quickstart SR trial", "## 5. Sweep time outside training",
                    "## 6. Loss networks"):
        assert heading in out
    from layersearch import ARCHS

    for arch in ARCHS:  # one row per network, with its time relative to VGG-16 relu2_2
        assert re.search(rf"^\| {arch} \| \S+ \| \d+ \| \d+ \| \*\*[\d.]+x\*\* \| [\d.]+-[\d.]+ \| [\d.]+ \| \d+ \|", out, re.M), arch
    for loss in ("relu2_2 (Johnson SR)", "relu2_2 + relu4_3", "Johnson style (Gram)", "ESRGAN conv5_4 (VGG-19)"):
        row = next(line for line in out.splitlines() if line.startswith(f"| {loss} |") and "x** |" in line)
        assert row.endswith("| yes |"), row  # ours and the reference compute the same loss value


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
def test_pruning_benchmark_compares_both_pruners_for_each_sampler_seed():
    out = _run([sys.executable, "benchmarks/pruning.py", "--seeds", "1", "--sampler-seeds", "2", "study.n_trials=3",
                "study.n_startup_trials=1", "trainer.steps=4", "trainer.eval_every=2", "task.crop=32",
                "task.val_crop=64", "model.channels=8", "model.n_blocks=1"], timeout=900).stdout
    assert "RANDOM WEIGHTS" in out
    assert [line for line in out.splitlines() if line.startswith("sampler seed ")] == ["sampler seed 0", "sampler seed 1"]
    rows = [line.split() for line in out.splitlines() if line.startswith(("median ", "none "))]
    assert [r[0] for r in rows] == ["median", "none", "median", "none"]
    for row in rows:
        trials, complete, pruned, failed, steps = (int(v) for v in row[1:6])
        assert trials == 3 and complete + pruned + failed == trials
        assert steps <= 3 * 4 and (row[0] == "median" or (pruned == 0 and steps == 12))
    # The saving of each seed, and their mean, follow from the steps in the table.
    saved = [1 - int(rows[i][5]) / int(rows[i + 1][5]) for i in (0, 2)]
    assert re.findall(r"steps saved by median pruning: (\d+)%", out) == [f"{100 * v:.0f}" for v in saved]
    assert f"mean {100 * sum(saved) / 2:.0f}% (goal >= 40%)" in out
