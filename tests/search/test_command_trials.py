"""Command trials end to end through the `layersearch` console script (slow: one process per trial).

Checked from the outside: Optuna's and MLflow's own APIs, and /proc for what is left running.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import console_script, run_cli, wait_until
from optuna.trial import TrialState

from layersearch.trial.processes import group_members

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ROOT / "tests" / "commands"
PY = shlex.quote(sys.executable)
SMOKE = ["preset=smoke", "trial=command"]
QUALITY = ["study.objectives=[quality]", "study.directions=[minimize]"]

pytestmark = pytest.mark.slow


def trials_of(tmp_path: Path, name: str):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/studies/{name}/optuna.db").trials


def test_the_example_script_swept_with_median_pruning_leaves_no_process(tmp_path):
    # The shell records its pid, which `exec` hands to the script: that pid is the trial's process group.
    cmd = f"echo $$ > {{trial_dir}}/pgid; exec {PY} {ROOT / 'examples/denoise_script/train.py'}"
    done = run_cli(["sweep", *SMOKE, f"trial.cmd={cmd}", "trial.shell=true", "study.name=denoise",
                    "study.objectives=[lpips,psnr_y]", "study.n_trials=8", "study.pruner=median",
                    "study.n_startup_trials=2", "trainer.steps=30"], tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    trials = trials_of(tmp_path, "denoise")
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 8, states
    assert TrialState.PRUNED in states, done.stdout[-3000:]
    groups = [int((tmp_path / f"studies/denoise/trials/{t.number}/pgid").read_text()) for t in trials
              if (tmp_path / f"studies/denoise/trials/{t.number}/pgid").exists()]
    assert len(groups) == len([t for t in trials if t.state != TrialState.FAIL or "infeasible" not in
                               t.user_attrs.get("fail_reason", "")])
    assert all(group_members(pgid) == [] for pgid in groups)  # nothing of any trial is left running
    assert "RANDOM WEIGHTS" in done.stdout


def test_a_failing_command_is_failed_with_its_stderr_and_the_sweep_goes_on(tmp_path):
    done = run_cli(["sweep", *SMOKE, *QUALITY, f"trial.cmd={PY} {COMMANDS / 'fail_on_one.py'}", "study.name=fail",
                    "study.n_trials=3", "study.pruner=none"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = trials_of(tmp_path, "fail")
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[1].user_attrs["fail_reason"] == (
        "the command exited with status 1; stderr: loading the dataset failed: no such file data/train.lmdb")
    assert "trial 1 (pixel): FAIL (the command exited with status 1; stderr: loading" in done.stdout


def test_sigkill_of_the_sweep_leaves_no_trial_process_alive(tmp_path):
    proc = subprocess.Popen([console_script(), "sweep", *SMOKE, *QUALITY, f"trial.cmd={PY} {COMMANDS / 'stubborn.py'}",
                             "trial.kill_grace_s=1", "study.name=killed", "study.n_trials=2"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pids_file = tmp_path / "studies/killed/trials/0/pids.json"
    try:
        pids = wait_until(lambda: pids_file.exists() and json.loads(pids_file.read_text()),
                          "the first trial's command", proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        wait_until(lambda: group_members(pids["pgid"]) == [], "an empty process group", limit=1 + 5)
    finally:
        if proc.poll() is None:
            proc.kill()
        if pids_file.exists():
            for pid in group_members(json.loads(pids_file.read_text())["pgid"]):
                os.kill(pid, signal.SIGKILL)


def test_confirm_report_and_export_on_a_command_study(tmp_path):
    common = [*SMOKE, *QUALITY, f"trial.cmd={PY} {COMMANDS / 'quality.py'}", "study.name=cmd"]
    done = run_cli(["sweep", *common, "study.n_trials=3", "study.pruner=none", "trainer.steps=6"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = trials_of(tmp_path, "cmd")
    assert trials[0].values == [pytest.approx(0.12)]  # johnson_sr: relu2_2, seed 0, from its "final" line
    confirm = run_cli(["confirm", *common, "confirm.top_k=1", "confirm.seeds=2", "confirm.steps=8"], tmp_path)
    assert confirm.returncode == 0, confirm.stderr[-3000:]
    runs = sorted((tmp_path / "studies/cmd/confirm/runs").iterdir())
    seen = [json.loads((run / "trial.json").read_text()) for run in runs]
    assert {s["steps"] for s in seen} == {8} and sorted({s["seed"] for s in seen}) == [0, 1]
    summary = json.loads((tmp_path / "studies/cmd/confirm/confirm.json").read_text())
    pixel = next(c for c in summary["configs"] if c["baseline"] == "pixel")
    assert pixel["mean"]["quality"] == pytest.approx(0.1005)  # seeds 0 and 1: the command trained with each
    for command in ("report", "export"):
        out = run_cli([command, *common], tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "studies/cmd/best.yaml").read_text())
    assert best["provenance"]["metrics"] == {"quality": pytest.approx(0.1)}
    assert (tmp_path / "studies/cmd/report/index.html").exists()


def test_score_dir_outputs_are_scored_against_the_validation_folder(tmp_path):
    from PIL import Image

    val = tmp_path / "val"
    val.mkdir()
    for i in range(2):
        Image.new("RGB", (64, 48), (40 + 60 * i, 120, 200)).save(val / f"img{i}.png")
    done = run_cli(["sweep", *SMOKE, f"trial.cmd={PY} {COMMANDS / 'copy_val.py'} {val}", "trial.score_dir=outputs",
                    "data=folder", f"data.train_dir={val}", f"data.val_dir={val}", "scale=0",
                    "study.objectives=[psnr_y,lpips]", "study.name=scored", "study.n_trials=1",
                    "search_space.baselines=[pixel]"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (t,) = trials_of(tmp_path, "scored")
    scores = json.loads((tmp_path / "studies/scored/trials/0/scores.json").read_text())
    assert scores["n_images"] == 2 and t.values == [pytest.approx(scores["mean"]["psnr_y"]),
                                                     pytest.approx(scores["mean"]["lpips"])]
    assert 10 < t.values[0] < 60
