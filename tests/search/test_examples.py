"""examples/own_loop.py runs as a user would run it, at toy size (slow: a real process and sweep)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_own_loop_example_sweeps_the_users_function(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "examples/own_loop.py"), "study.n_trials=3", "trainer.steps=10"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    complete, pruned = map(int, re.search(r"(\d+) complete, (\d+) pruned; best:", done.stdout).groups())
    assert complete + pruned == 3 and complete >= 1
    trials = optuna.load_study(study_name="own_loop", storage=f"sqlite:///{tmp_path}/studies/own_loop/optuna.db").trials
    first = [t for t in trials if "repeat_of" not in t.user_attrs]  # the baselines' seed repeats come on top
    finished = [t for t in first if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3 and all(len(t.values) == 2 for t in finished if t.state.name == "COMPLETE")
    assert optuna.load_study(study_name="own_loop", storage=f"sqlite:///{tmp_path}/studies/own_loop/optuna.db"
                             ).user_attrs["trial_kind"] == "python"
