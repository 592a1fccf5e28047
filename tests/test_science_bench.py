"""`make bench-science`'s statistics (benchmarks/science.py): the Holm adjustment and the calls against the pixel
loss, on numbers made up so the answer is known. The runs themselves are the benchmark's, not a test's."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location("science", Path(__file__).resolve().parent.parent / "benchmarks/science.py")
science = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(science)


def test_holm_adjustment_by_hand():
    assert science.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert science.holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert science.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # 2 x 0.8 capped at 1, and monotone


def test_only_a_difference_beyond_the_seed_noise_is_called():
    rng = random.Random(0)
    names = list(science.configs())
    results = {}
    for name in names:
        shift = 1.0 if name == "imagenet blocks.2 + pixel" else 0.0  # 10 seed SDs better than the pixel loss
        results[name] = [{"psnr_y": 25.0 + shift + rng.gauss(0, 0.1), "haarpsi": 0.8 + rng.gauss(0, 0.001)}
                         for _ in range(3)]
    lines = science.stage_tables(results, 3)
    assert lines[0].startswith("Noise floor (pooled within-config seed SD): psnr_y 0.") and "df 42: 21 configs x 3" in lines[0]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines if line.startswith("| imagenet") or line.startswith("| random")}
    assert set(rows) == set(names) - {"pixel"}
    assert "better (p_Holm" in rows["imagenet blocks.2 + pixel"].split(" | ")[3]
    called = [n for n, line in rows.items() if "better" in line or "worse" in line]
    assert called == ["imagenet blocks.2 + pixel"]
