"""`layersearch confirm` as separate processes on a real smoke study: killed with SIGKILL mid-run and resumed,
and two processes sharing one queue. Both read back what Optuna, MLflow and the files recorded."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter

import mlflow
import optuna
import pytest
from helpers import console_script, run_cli

pytestmark = pytest.mark.slow

CONFIRM = ["confirm", "preset=smoke", "study.name=s1", "confirm.top_k=2", "confirm.seeds=2", "confirm.steps=8"]
COMPLETE, RUNNING, FAIL = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING,
                           optuna.trial.TrialState.FAIL)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A smoke sweep of three trials (the johnson_sr and pixel baselines, one sampled config)."""
    root = tmp_path_factory.mktemp("swept")
    done = run_cli(["sweep", "preset=smoke", "study.name=s1", "study.n_trials=3"], root)
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "studies"


def _jobs(root) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{root}/studies/s1/optuna.db"
    if "s1.confirm" not in optuna.study.get_all_study_names(storage):
        return []
    return optuna.load_study(study_name="s1.confirm", storage=storage).get_trials()


def _job(t) -> tuple[str, int]:
    return t.user_attrs["confirm_key"], t.user_attrs["seed"]


def _start(root) -> subprocess.Popen:
    return subprocess.Popen([console_script(), *CONFIRM], cwd=root, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_killed_confirm_resumes_and_runs_only_the_remaining_jobs(swept, tmp_path):
    shutil.copytree(swept, tmp_path / "studies")
    started = time.perf_counter()
    proc = _start(tmp_path)
    deadline = time.monotonic() + 400
    # Kill during a run that trains the loss network (several seconds), once at least one run has finished.
    # Seen from outside, the state can change between a look and the kill: the process is frozen (SIGSTOP)
    # first and the storage read again, so it is killed only in that state, and let go (SIGCONT) otherwise.
    def wanted() -> bool:
        trials = _jobs(tmp_path)
        done = [t for t in trials if t.state == COMPLETE]
        busy = [t for t in trials if t.state == RUNNING and t.user_attrs["layer_config"]["content_layers"]]
        return bool(done and busy)

    while True:
        if wanted():
            os.kill(proc.pid, signal.SIGSTOP)
            if wanted():
                break
            os.kill(proc.pid, signal.SIGCONT)
        assert proc.poll() is None, f"confirm ended before it could be killed: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "confirm made no progress"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    killed_at = time.perf_counter() - started
    before = {_job(t): t for t in _jobs(tmp_path) if t.state == COMPLETE}
    killed = [t for t in _jobs(tmp_path) if t.state == RUNNING]
    assert len(killed) == 1 and not (tmp_path / "studies/s1/confirm/confirm.json").exists()

    second = run_cli(CONFIRM, tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    total = time.perf_counter() - started
    print(f"killed after {killed_at:.1f} s with {len(before)} runs done; both runs together took {total:.1f} s")
    after = _jobs(tmp_path)
    complete = Counter(_job(t) for t in after if t.state == COMPLETE)
    n_jobs = len(complete)
    assert n_jobs == 6 and set(complete.values()) == {1}  # 3 configs x 2 seeds, each run once
    assert len(after) == n_jobs + 1  # and the killed one, failed
    for job, t in before.items():  # runs done before the kill were not repeated
        assert next(a for a in after if a.number == t.number).state == COMPLETE
        assert all(a.number == t.number for a in after if _job(a) == job and a.state == COMPLETE)
    dead = next(a for a in after if a.number == killed[0].number)
    assert dead.state == FAIL
    assert f"{len(before)} runs already done" in second.stdout
    assert f"(pid {proc.pid}); it runs again" in second.stdout
    ran_again = [line for line in second.stdout.splitlines() if " seed " in line and ": lpips=" in line]
    assert len(ran_again) == n_jobs - len(before)

    summary = json.loads((tmp_path / "studies/s1/confirm/confirm.json").read_text())
    assert summary["random_weights"] is True and summary["steps"] == 8 and summary["seeds"] == [0, 1]
    assert {c["key"] for c in summary["configs"]} == {key for key, _ in complete}
    assert all(c["n_seeds"] == 2 and c["std"] and c["long_rank"] for c in summary["configs"])
    # Two seeds are both the first round a test can happen and the last: every config ran both, each has a verdict.
    assert summary["race"]["runs"] == 6 and summary["race"]["runs_saved"] == 0
    assert summary["race"]["blocks"] == "seed x image" and summary["race"]["images"] > 1
    assert sum(c["verdict"]["status"] == "best" for c in summary["configs"]) == 1
    assert all(c["verdict"]["text"] for c in summary["configs"])
    assert all(len(r["per_image"]["lpips"]) == len(r["images"]) == summary["race"]["images"]
               for c in summary["configs"] for r in c["per_seed"])
    assert (tmp_path / "studies/s1/confirm/confirm.md").read_text().count("RANDOM WEIGHTS") == 1
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/studies/mlflow.db")
    experiment = client.get_experiment_by_name("s1")
    runs = client.search_runs([experiment.experiment_id], "tags.`layersearch.confirm` = 'true'")
    finished = [r for r in runs if r.info.status == "FINISHED" and r.info.run_name != "confirm summary"]
    assert len(finished) == n_jobs
    assert sum(r.info.run_name == "confirm summary" for r in runs) == 1


def test_two_confirm_processes_share_the_jobs_without_running_one_twice(swept, tmp_path):
    shutil.copytree(swept, tmp_path / "studies")
    procs = [_start(tmp_path), _start(tmp_path)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    trials = _jobs(tmp_path)
    assert len(trials) == 6 and all(t.state == COMPLETE for t in trials)  # no duplicate, no stray trial
    assert len({_job(t) for t in trials}) == 6
    by_process = [{line.split(":")[0] for line in out.splitlines() if ": lpips=" in line} for out, _ in outputs]
    assert all(by_process) and not by_process[0] & by_process[1]  # both worked, on different jobs
    assert len(by_process[0] | by_process[1]) == 6
    assert (tmp_path / "studies/s1/confirm/confirm.json").is_file()
