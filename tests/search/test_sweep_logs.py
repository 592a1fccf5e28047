"""A sweep whose output goes to a file (SLURM, CI: ``> sweep.log 2>&1``) writes a log a person can read."""

from __future__ import annotations

import os
import re
import subprocess

from helpers import console_script

N_TRIALS = 4


def test_a_redirected_sweep_writes_one_progress_line_per_trial_and_no_terminal_codes(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("LAYERSEARCH_PROGRESS", "TQDM_DISABLE", "PYTHONUNBUFFERED", "LAYERSEARCH_DEBUG")}
    # The training bar is on (trainer.progress=true, the default outside preset=smoke) and prints a line only
    # after an hour: a 4-step training is a "short run" that must print nothing, however loaded the machine.
    env["LAYERSEARCH_PROGRESS_EVERY_S"] = "3600"
    log_path = tmp_path / "sweep.log"
    with open(log_path, "w") as log:  # stdout and stderr into one file, as `> sweep.log 2>&1` does
        done = subprocess.run([console_script(), "sweep", "preset=smoke", "study.name=logs", f"study.n_trials={N_TRIALS}",
                               "trainer.progress=true"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                              timeout=600)
    text = log_path.read_text()
    assert done.returncode == 0, text[-3000:]
    assert "\r" not in text and "\x1b[" not in text, repr(text[:2000])  # no bar redraws, no cursor moves
    assert "View run" not in text and " INFO " not in text
    lines = text.splitlines()

    # One progress line per trial (preset=smoke reruns no baseline seeds, so every trial counts), each right
    # after the trial's own line and counting up to N_TRIALS.
    progress = [i for i, line in enumerate(lines) if line.startswith("sweep logs: ")]
    assert [lines[i].split(",")[0] for i in progress] == [f"sweep logs: {k}/{N_TRIALS} trials"
                                                          for k in range(1, N_TRIALS + 1)]
    assert all(re.match(r"trial \d+( \(.*\))?: (COMPLETE|PRUNED|FAIL)", lines[i - 1]) for i in progress), lines

    # The summary is all there, after the last progress line.
    setup, summary = lines[:progress[0] - 1], lines[progress[-1] + 1:]
    assert any(line.startswith("study logs: ") and " complete, " in line for line in summary), summary
    assert "Pareto front (and the literature baselines):" in summary
    assert any(line.startswith(f"ran {N_TRIALS} trials in ") for line in summary), summary
    assert summary[-1].startswith("next: layersearch export study.name=logs")

    # The size of the log: what is said once (the set-up lines before the first trial: warnings, the study,
    # the baselines; the summary after the last progress line), plus two lines per trial (its outcome and one
    # progress line) whatever its number of steps. Nothing set up is said twice.
    per_trial = 2
    assert len(setup) == len(set(setup)), setup
    assert len(lines) <= len(setup) + per_trial * N_TRIALS + len(summary), lines
