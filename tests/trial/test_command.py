"""Command trials (`trial=command`) run by `CommandTraining` directly, as a sweep worker runs them.

The commands are the small scripts in tests/commands/. Nothing here waits for a guessed time: the stubborn
command is stopped by the code under test, and the tests then check that its whole group is gone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import wait_until

from layersearch import Pruned, Trial, TrialFailed
from layersearch.errors import ConfigValueError
from layersearch.settings import LpipsSettings, TrialSettings
from layersearch.trial.command import PLACEHOLDERS, CommandError, CommandTraining
from layersearch.trial.processes import group_members

COMMANDS = Path(__file__).resolve().parents[1] / "commands"
PY = sys.executable


def training(cmd: str, log=None, **settings) -> CommandTraining:
    settings = TrialSettings(kind="command", **{"cmd": cmd, "kill_grace_s": 0.5, "poll_s": 0.05, **settings})
    return CommandTraining(settings, LpipsSettings(net="alex", weights="random"), log=log or (lambda text: None))


def trial(tmp_path, reporter=None, number: int = 4) -> Trial:
    return Trial(number=number, study_name="s", params={"use_relu1_2": True},
                 layer_config={"loss_net": {"arch": "vgg16", "weights": "random"}, "content_layers": {"relu1_2": 1.0}},
                 steps=12, seed=3, device="cpu", dir=tmp_path / "trial dir", objectives=["quality"],
                 reporter=reporter or (lambda step, values: None))


def args(*lines: str) -> str:
    """Metrics lines as quoted arguments of lines.py, braces escaped from the placeholder syntax."""
    return " ".join("'" + line.replace("{", "{{").replace("}", "}}") + "'" for line in lines)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


BAD = {
    "empty": ("", CommandError, "trial=command needs trial.cmd"),
    "unknown placeholder": (f"{PY} x.py {{loss}}", CommandError, "unknown placeholder {loss}; valid: {loss_config}"),
    "positional placeholder": (f"{PY} x.py {{}}", CommandError, "unknown placeholder {}"),
    "lone brace": (f"{PY} x.py {{steps", CommandError, "write a literal brace as {{ or }}"),
    "program not found": ("no-such-program-xyz {steps}", CommandError, "program 'no-such-program-xyz' not found on PATH"),
    "no such file": ("./nowhere/train {steps}", CommandError, "program './nowhere/train' not found"),
    "bad quoting": (f"{PY} 'x.py", CommandError, "cannot be split into arguments"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_a_command_that_cannot_run_is_refused_before_any_trial(case):
    cmd, error, message = BAD[case]
    with pytest.raises(error) as caught:
        training(cmd).check()
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("key", "value"), [("timeout_s", 0), ("timeout_s", "soon"), ("kill_grace_s", -1),
                                            ("kill_grace_s", None), ("poll_s", 0)])
def test_durations_must_be_positive_numbers(key, value):
    with pytest.raises(ConfigValueError, match=f"trial.{key} must be a positive number"):
        training(f"{PY} x.py", **{key: value}).check()


def test_score_dir_needs_the_validation_targets():
    with pytest.raises(CommandError, match="needs the validation targets: data=folder data.val_dir"):
        training(f"{PY} x.py", score_dir="outputs").check()


def test_every_placeholder_fills_one_argument_and_the_environment_carries_them_too(tmp_path):
    out = tmp_path / "seen.json"
    cmd = f"{PY} {COMMANDS / 'dump_env.py'} {out} " + " ".join(f"{{{p}}}" for p in PLACEHOLDERS)
    t = trial(tmp_path)
    assert training(cmd)(t) == {"quality": 0.5}
    seen = json.loads(out.read_text())
    values = dict(zip(PLACEHOLDERS, seen["argv"], strict=True))
    assert values["trial_dir"] == str(t.dir) and " " in values["trial_dir"]  # one argument, spaces and all
    assert values["steps"] == "12" and values["seed"] == "3" and values["number"] == "4" and values["device"] == "cpu"
    assert values["metrics"] == str(t.dir / "metrics.jsonl")
    assert seen["env"]["LAYERSEARCH_TRIAL_DIR"] == str(t.dir) and seen["env"]["LAYERSEARCH_STEPS"] == "12"
    assert seen["env"]["PYTHONUNBUFFERED"] == "1"
    assert seen["stdin"] == ""  # stdin closed
    assert seen["pgid"] == seen["pid"] == seen["sid"] != os.getpgrp()  # its own session and process group
    config = Path(values["loss_config"]).read_text()
    assert "relu1_2" in config
    info = json.loads(Path(values["trial_json"]).read_text())
    assert info["params"] == {"use_relu1_2": True} and info["steps"] == 12 and info["objectives"] == ["quality"]


def test_shell_commands_get_quoted_values(tmp_path):
    t = trial(tmp_path)
    cmd = f"echo {{trial_dir}} > {{trial_dir}}/echoed && {PY} {COMMANDS / 'lines.py'} " + args('{"step": 1, "quality": 2}')
    assert training(cmd, shell=True)(t) == {"quality": 2}
    assert (t.dir / "echoed").read_text().strip() == str(t.dir)


def test_lines_are_reported_as_they_come_and_the_final_line_holds_the_values(tmp_path):
    reported, warnings = [], []
    t = trial(tmp_path, reporter=lambda step, values: reported.append((step, values)))
    lines = ['{"step": 1, "quality": 0.9}', "not json", '{"step": 2, "quality": "high"}', '{"quality": 0.1}',
             '{"step": 2, "quality": 0.5, "extra": 7}', '{"step": 3, "quality": 0.4, "final": true}',
             '{"step": 4, "quality": 0.3}', 'PARTIAL:{"step": 5, "quality": 0.2}']
    out = training(f"{PY} {COMMANDS / 'lines.py'} {args(*lines)}", log=warnings.append, echo=True)(t)
    assert out == {"quality": 0.4}  # the "final": true line, not the last one
    assert reported == [(1, {"quality": 0.9}), (2, {"quality": 0.5, "extra": 7.0}), (3, {"quality": 0.4}),
                        (4, {"quality": 0.3})]  # the partial last line never counts
    skipped = [w for w in warnings if "skipped malformed line" in w]
    assert len(skipped) == 3 and "line 2 of metrics.jsonl" in skipped[0] and "not numbers" in skipped[1]
    assert 'no "step"' in skipped[2]
    assert "[trial 4] out line" in warnings and "[trial 4] err line two" in warnings  # trial.echo=true
    assert (t.dir / "stdout.log").read_text() == "out line\n"
    assert "err line two" in (t.dir / "stderr.log").read_text()


def test_without_a_final_line_the_last_complete_line_holds_the_values(tmp_path):
    out = training(f"{PY} {COMMANDS / 'lines.py'} " + args('{"step": 1, "quality": 0.9}', '{"step": 2, "quality": 0.7}'))(
        trial(tmp_path))
    assert out == {"quality": 0.7}


def test_a_failing_command_fails_with_the_end_of_its_stderr(tmp_path, monkeypatch):
    monkeypatch.setenv("EXIT_CODE", "3")
    with pytest.raises(TrialFailed, match="the command exited with status 3; stderr: err line one | err line two"):
        training(f"{PY} {COMMANDS / 'lines.py'} " + args('{"step": 1, "quality": 0.9}'))(trial(tmp_path))


def test_a_command_that_reports_nothing_fails_naming_the_objectives(tmp_path):
    with pytest.raises(TrialFailed, match=r"wrote no metrics line to metrics.jsonl \(objectives quality\)"):
        training(f"{PY} {COMMANDS / 'lines.py'}")(trial(tmp_path))


def test_a_non_finite_value_fails_the_trial_naming_metric_and_step(tmp_path):
    with pytest.raises(TrialFailed, match="metric 'quality' is nan at step 2"):
        training(f"{PY} {COMMANDS / 'lines.py'} " + args('{"step": 1, "quality": 1}', '{"step": 2, "quality": NaN}'))(
            trial(tmp_path))


def _pids(t: Trial) -> dict:
    return json.loads((t.dir / "pids.json").read_text())


def test_a_pruned_command_that_ignores_sigterm_is_killed_after_the_grace_and_reaped(tmp_path):
    t = trial(tmp_path, reporter=lambda step, values: "worse than the median" if step == 3 else None)
    with pytest.raises(Pruned, match="worse than the median"):
        training(f"{PY} {COMMANDS / 'stubborn.py'}", kill_grace_s=0.3)(t)
    pids = _pids(t)
    assert group_members(pids["pgid"]) == []  # leader and child: SIGKILLed with the group
    assert not alive(pids["pid"]) and not alive(pids["child"])
    with pytest.raises(ChildProcessError):
        os.waitpid(pids["pid"], os.WNOHANG)  # the leader was reaped: no zombie of ours left


def test_a_timed_out_command_is_killed_with_its_group(tmp_path):
    t = trial(tmp_path)
    with pytest.raises(TrialFailed, match=r"timeout: the command ran longer than trial.timeout_s=0.5 s"):
        training(f"{PY} {COMMANDS / 'stubborn.py'}", timeout_s=0.5, kill_grace_s=0.2)(t)
    assert group_members(_pids(t)["pgid"]) == []


def test_an_interrupt_of_the_sweep_stops_the_command_group(tmp_path):
    def ctrl_c(step, values):
        if step == 2:
            raise KeyboardInterrupt  # what Ctrl-C (or SIGTERM, as search.loop.Interrupted) does mid-trial
    t = trial(tmp_path, reporter=ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        training(f"{PY} {COMMANDS / 'stubborn.py'}", kill_grace_s=0.2)(t)
    assert group_members(_pids(t)["pgid"]) == []


def test_sigkill_of_the_sweep_leaves_no_trial_process_alive(tmp_path):
    folder = tmp_path / "trial"
    driver = subprocess.Popen([PY, str(COMMANDS / "driver.py"), str(folder)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        pids = wait_until(lambda: (folder / "pids.json").exists() and json.loads((folder / "pids.json").read_text()),
                          "the command's pids.json", driver)
        os.kill(driver.pid, signal.SIGKILL)  # no cleanup of ours runs: the watchdog must do it
        driver.wait()
        # kill_grace_s is 1 s in driver.py: the group must be gone within kill_grace_s + 5 s.
        wait_until(lambda: group_members(pids["pgid"]) == [], "an empty process group", limit=1.0 + 5.0)
        assert not alive(pids["child"])
    finally:
        if driver.poll() is None:
            driver.kill()
        for pid in group_members(json.loads((folder / "pids.json").read_text())["pgid"]) if (folder / "pids.json").exists() else []:
            os.kill(pid, signal.SIGKILL)


def test_trial_from_env_outside_a_sweep_says_what_is_missing_in_one_line():
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERSEARCH_")}
    done = subprocess.run([PY, "-c", "import layersearch; layersearch.trial_from_env()"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "LAYERSEARCH_TRIAL_JSON is not set" in lines[0] and "Traceback" not in done.stderr
