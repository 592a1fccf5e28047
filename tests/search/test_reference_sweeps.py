"""The built-in SR and style sweeps give the results they gave before the trial seam (issue 15).

`data/reference_sweeps.json` was recorded on main at b4aecef, before the built-in loop moved behind the
`Trial` handle, with the overrides below (on the CPU in fp32, so that a CPU with or without bf16 units, on a host with or
without a GPU, computes the same).
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from helpers import smoke

from layersearch.search import run_sweep

REFERENCE = json.loads((Path(__file__).parent / "data" / "reference_sweeps.json").read_text())
SPACES = {"sr": ["task=sr_x4", "search_space=sr_relu"], "style": ["task=style", "search_space=style_johnson"]}


@pytest.mark.slow
@pytest.mark.parametrize("name", SPACES)
def test_builtin_sweep_matches_the_values_recorded_before_the_seam(tmp_path, name):
    cfg = smoke(*SPACES[name], f"study.name=ref_{name}", "study.n_trials=5", "trainer.device=cpu", "trainer.precision=fp32",
                "trainer.steps=6", "trainer.eval_every=3", "study.pruner=none", f"paths.studies_dir={tmp_path}",
                f"tracking.uri=sqlite:///{tmp_path}/mlflow.db")
    run_sweep(cfg)
    trials = optuna.load_study(study_name=f"ref_{name}", storage=f"sqlite:///{tmp_path}/ref_{name}/optuna.db").trials
    expected = REFERENCE[name]
    assert [t.number for t in trials] == [t["number"] for t in expected]
    for got, want in zip(trials, expected, strict=True):
        assert got.state.name == want["state"]
        assert got.params == want["params"]
        assert got.values == pytest.approx(want["values"], rel=1e-5)
