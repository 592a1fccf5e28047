"""`make bench-search`'s replay harness (benchmarks/search/replay.py) on made-up tables whose answer is known, and
the committed tabular benchmark's shape. The trainings are the table's, not a test's."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks/search"))


make_table = importlib.import_module("make_table")  # benchmarks/search's scripts, imported as siblings
replay = importlib.import_module("replay")
bench = importlib.import_module("bench_search")
COMMITTED = ROOT / "benchmarks/search/table-sr-lite0.jsonl"


def _curve(final: float, early: float | None = None) -> list[list]:
    early = final if early is None else early
    steps = list(range(25, 201, 25))
    return [[s, {"haarpsi": early + (final - early) * s / 200, "psnr_y": 25.0, "ssim_y": 0.7}] for s in steps]


def write_table(path: Path, finals: dict[str, float], seeds: int = 2, early: dict[str, float] | None = None) -> Path:
    meta = {"kind": "meta", "command": "made up", "layers": make_table.LAYERS, "weight_levels": make_table.WEIGHT_LEVELS,
            "pixel_levels": make_table.PIXEL_LEVELS, "max_layers": make_table.MAX_LAYERS, "seeds": seeds}
    rows = [meta]
    for key in make_table.space_configs():
        for seed in range(seeds):
            rows.append({"kind": "run", "config": key, "seed": seed, "history": _curve(finals.get(key, 0.80),
                         (early or {}).get(key)), "per_image": {}, "seconds": 1.0})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_the_discrete_space_has_every_subset_of_up_to_two_layers_at_each_level():
    configs = make_table.space_configs()
    # pixel alone + 2 pixel levels x (5 singles x 2 weights + 10 pairs x 4 weight pairs)
    assert len(configs) == 1 + 2 * (5 * 2 + 10 * 4) == 101
    assert configs["pixel"] == ({}, 1.0)
    assert configs["blocks.0@0.3+blocks.15@3+pixel"] == ({"blocks.0": 0.3, "blocks.15": 3.0}, 1.0)
    assert all(1 <= len(layers) <= 2 for key, (layers, _) in configs.items() if key != "pixel")


def test_a_sampled_weight_snaps_to_the_level_of_its_decade():
    levels = make_table.WEIGHT_LEVELS
    assert replay.table_key({"blocks.2": 0.11, "blocks.10": 9.9}, 1.0, levels) == "blocks.2@0.3+blocks.10@3+pixel"
    assert replay.table_key({"blocks.4": 0.99}, 0.0, levels) == "blocks.4@0.3"
    assert replay.table_key({"blocks.4": 1.0}, 0.0, levels) == "blocks.4@3"
    assert replay.table_key({}, 1.0, levels) == "pixel"


def test_every_config_the_real_space_samples_is_in_the_table(tmp_path):
    table = replay.Table.load(write_table(tmp_path / "t.jsonl", {}))
    for seed in range(3):
        trace = replay.replay(table, replay.Method("r", "random", "none"), seed, 40, 10**9)
        assert len(trace.answer) == 40 and all(a in table.truth for a in trace.answer)  # no KeyError, no empty config


def test_random_search_finds_a_clearly_best_config_and_its_regret_is_zero(tmp_path):
    best = "blocks.2@3+blocks.10@3+pixel"
    table = replay.Table.load(write_table(tmp_path / "t.jsonl", {best: 0.90}))
    assert table.best == pytest.approx(0.90) and table.top(0.05) >= {best}
    found = 0
    for seed in range(10):
        trace = replay.replay(table, replay.Method("r", "random", "none"), seed, 64, 10**9)
        found += trace.answer[-1] == best
        assert trace.steps[-1] == 64 * 200  # unpruned: every trial costs its 200 steps
        assert bench.regret(table, trace.answer[-1]) == pytest.approx(0.0 if trace.answer[-1] == best else 0.10)
    # P(a given config among 64 random draws) is high but not 1: a weak but failing-capable check
    assert found >= 3


def test_median_pruning_stops_trials_below_the_median_and_counts_only_the_steps_they_ran(tmp_path):
    # Half the configs are poor from the first evaluation on: the median pruner stops them at its warm-up.
    finals = {key: (0.70 if i % 2 else 0.85) for i, key in enumerate(make_table.space_configs())}
    table = replay.Table.load(write_table(tmp_path / "t.jsonl", finals))
    trace = replay.replay(table, replay.Method("m", "random", "median"), 0, 40, 10**9)
    assert any(trace.pruned)
    per_trial = np.diff([0] + trace.steps)
    assert set(per_trial[np.array(trace.pruned)]) == {replay.WARMUP + (25 - replay.WARMUP % 25) % 25}
    assert set(per_trial[~np.array(trace.pruned)]) == {200}
    assert all(table.truth[a] == pytest.approx(0.85) for a in trace.answer if a is not None)


def test_the_two_objective_study_prunes_with_layersearchs_median_rule(tmp_path):
    finals = {key: (0.70 if i % 2 else 0.85) for i, key in enumerate(make_table.space_configs())}
    table = replay.Table.load(write_table(tmp_path / "t.jsonl", finals))
    trace = replay.replay(table, replay.Method("m2", "tpe", "median", 2), 0, 30, 10**9)
    assert any(trace.pruned) and not trace.pruned[: replay.N_STARTUP] == [True] * replay.N_STARTUP


def test_the_budget_in_steps_stops_a_study(tmp_path):
    table = replay.Table.load(write_table(tmp_path / "t.jsonl", {}))
    trace = replay.replay(table, replay.Method("r", "random", "none"), 0, 1000, 10 * 200)
    assert trace.steps[-1] == 10 * 200 and len(trace.steps) == 10
    assert bench.answer_at_budget(trace.steps, trace.answer, 3 * 200) == trace.answer[2]
    assert bench.answer_at_budget(trace.steps, trace.answer, 100) is None


def test_short_run_top_k_ranks_by_the_first_evaluation_and_answers_the_best_final(tmp_path):
    # One config looks best at step 25 but ends worst; another starts low and ends best. Everything fits the budget.
    keys = list(make_table.space_configs())
    early = {key: 0.80 for key in keys} | {keys[1]: 0.95, keys[2]: 0.81}
    finals = {keys[1]: 0.60, keys[2]: 0.90}
    table = replay.Table.load(write_table(tmp_path / "t.jsonl", finals, early=early))
    # 32 full trials: k = 8 finalists, all 101 configs get a short run; keys[2] is among the 8 best at step 25
    assert replay.short_run_top_k(table, 0, 32 * 200) == keys[2]
    # k = 1 with a short run for every config: only the best short run is trained on, and it is keys[1], the trap
    assert replay.short_run_top_k(table, 0, 175 + 101 * 25, k=1) == keys[1]


@pytest.mark.skipif(not COMMITTED.exists(), reason="the tabular benchmark is not made yet")
def test_the_committed_table_holds_every_config_with_every_seed():
    table = replay.Table.load(COMMITTED)
    assert set(table.truth) == set(make_table.space_configs())
    assert table.n_seeds >= 3
    assert all(len(h) == 8 and h[-1][0] == 200 for runs in table.runs.values() for h in runs)
    assert all(len(v["haarpsi"]) == 2 for runs in table.per_image.values() for v in runs)  # chelsea, coffee


def test_the_baselines_go_first_as_in_a_sweep(tmp_path):
    table = replay.Table.load(write_table(tmp_path / "t.jsonl", {"pixel": 0.9}))
    trace = replay.replay(table, replay.Method("b", "random", "none", baselines=True), 0, 3, 10**9)
    # lite0_shallow (blocks.2 at weight 1, snapped to 3), lite0_deep (blocks.10, no better), then the pixel loss
    assert trace.answer == ["blocks.2@3", "blocks.2@3", "pixel"] and trace.steps == [200, 400, 600]


def test_a_replayed_study_is_the_same_every_time_hyperband_too(tmp_path):
    # Hyperband picks a trial's bracket from a hash of the study's name: an unnamed study would differ per run.
    finals = {key: 0.70 + 0.001 * i for i, key in enumerate(make_table.space_configs())}
    table = replay.Table.load(write_table(tmp_path / "t.jsonl", finals))
    method = replay.Method("hb", "tpe", "hyperband")
    first, second = (replay.replay(table, method, 3, 20, 10**9) for _ in range(2))
    assert (first.steps, first.answer, first.pruned) == (second.steps, second.answer, second.pruned)
