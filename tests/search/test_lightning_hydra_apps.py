"""Lightning trainings and a Hydra app swept end to end, as the examples tell a user to (slow: real sweeps).

examples/lightning/sr_module.py as ``trial=python``, examples/hydra_app/train.py as a command trial with
``{overrides:model.perceptual}``, and a DDP training on 2 CPU processes; checked from the outside: Optuna's
storage, the files each trial left, and /proc for what is left running.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import run_cli
from optuna.trial import TrialState

from layersearch.trial.processes import group_members

pytest.importorskip("lightning.pytorch")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PY = shlex.quote(sys.executable)
# EfficientNet-Lite0's real ImageNet weights, scored by HaarPSI and PSNR-Y: nothing downloaded, nothing random.
LITE0 = ["loss_net=efficientnet_lite0", "search_space=sr_lite0", "study.objectives=[haarpsi,psnr_y]",
         "study.n_startup_trials=1", "study.n_warmup_steps=0", "study.baseline_seeds=1"]


def trials_of(tmp_path: Path, name: str):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/studies/{name}/optuna.db").trials


def no_exception_noise(done) -> None:
    text = done.stdout + done.stderr
    assert "Traceback" not in text and "unexpected exception" not in text.lower(), text[-3000:]


def test_the_lightning_example_as_a_python_trial_is_pruned_by_the_callback_at_validation_ends(tmp_path):
    done = run_cli(["sweep", *LITE0, "trial=python", f"trial.fn={ROOT / 'examples/lightning/sr_module.py'}:train",
                    "study.name=lightning_sr", "study.n_trials=5", "trainer.steps=20"], tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    no_exception_noise(done)
    trials = trials_of(tmp_path, "lightning_sr")
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) >= 1 and TrialState.PRUNED in states, done.stdout[-3000:]
    validation_steps = {5, 10, 15, 20}  # train(t) validates every steps // 4 steps
    for t in trials:  # two objectives: the pruner's values are the user attribute "intermediate", by step
        steps = {int(step) for step in t.user_attrs["intermediate"]}
        assert steps <= validation_steps, steps
        if t.state == TrialState.PRUNED:  # stopped at the validation end where the pruner said so
            assert max(steps) < 20 and f"trial {t.number}" in done.stdout
    assert "PRUNED (haarpsi=" in done.stdout and "worse than the median" in done.stdout


def test_the_hydra_app_as_a_command_trial_receives_the_sampled_loss_is_pruned_and_leaves_no_process(tmp_path):
    cmd = (f"echo $$ > {{trial_dir}}/pgid; exec {PY} {ROOT / 'examples/hydra_app/train.py'} "
           "{overrides:model.perceptual} trainer.max_steps={steps} trainer.eval_every=10 seed={seed} "
           "hydra.run.dir={trial_dir}/hydra")
    common = [*LITE0, "trial=command", f"trial.cmd={cmd}", "trial.shell=true", "study.name=hydra_sr"]
    done = run_cli(["sweep", *common, "study.n_trials=4", "trainer.steps=40"], tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    no_exception_noise(done)
    trials = trials_of(tmp_path, "hydra_sr")
    assert TrialState.PRUNED in [t.state for t in trials], done.stdout[-3000:]
    for t in trials:
        folder = tmp_path / f"studies/hydra_sr/trials/{t.number}"
        app_config = yaml.safe_load((folder / "hydra/.hydra/config.yaml").read_text())
        assert app_config["model"]["perceptual"] == yaml.safe_load((folder / "loss_config.yaml").read_text())
        assert group_members(int((folder / "pgid").read_text())) == []  # nothing of any trial is left running

    confirm = run_cli(["confirm", *common, "confirm.top_k=2", "confirm.seeds=2", "confirm.steps=20"], tmp_path)
    assert confirm.returncode == 0, confirm.stderr[-3000:]
    assert (tmp_path / "studies/hydra_sr/confirm/confirm.json").exists()
    for command in ("report", "export"):
        out = run_cli([command, *common], tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "studies/hydra_sr/best.yaml").read_text())
    assert best["loss_net"]["arch"] == "efficientnet_lite0" and set(best["provenance"]["metrics"]) == {"haarpsi", "psnr_y"}
    assert (tmp_path / "studies/hydra_sr/report/index.html").exists()


def test_a_ddp_training_on_two_cpu_processes_reports_from_rank_zero_and_is_stopped_whole(tmp_path):
    cmd = f"echo $$ > {{trial_dir}}/pgid; exec {PY} {ROOT / 'tests/commands/lightning_ddp.py'}"
    done = run_cli(["sweep", "preset=smoke", "trial=command", f"trial.cmd={cmd}", "trial.shell=true",
                    "study.objectives=[quality]", "study.directions=[minimize]", "study.name=ddp",
                    "study.n_trials=4", "study.n_startup_trials=1", "study.n_warmup_steps=0", "trainer.steps=12"],
                   tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    trials = trials_of(tmp_path, "ddp")
    assert TrialState.PRUNED in [t.state for t in trials], done.stdout[-3000:]
    for t in trials:
        folder = tmp_path / f"studies/ddp/trials/{t.number}"
        assert len((folder / "ranks.txt").read_text().split()) == 2  # both ranks ran
        lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
        steps = [line["step"] for line in lines]
        assert steps == sorted(set(steps)) and set(steps) <= {2, 4, 6, 8, 10, 12}  # one line per validation: rank 0's
        # What the sweep read before it decided (a fast training may write on until it is stopped).
        assert set(t.intermediate_values) <= set(steps)
        assert group_members(int((folder / "pgid").read_text())) == []
