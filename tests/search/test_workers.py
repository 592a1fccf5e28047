"""Many workers on one study: exact n_trials, dead workers noticed and their trials retried, signals, faults.

Checked from the outside through Optuna's and MLflow's own APIs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import warnings
from dataclasses import replace
from pathlib import Path

import mlflow
import optuna
import pytest
import torch
from helpers import Watched, console_script, one_error_line, storage_args
from optuna.trial import TrialState

from layersearch.cli import main
from layersearch.config import load_settings
from layersearch.search.loop import gpu_plan, n_workers, reserve_trial
from layersearch.search.loop import worker as loop
from layersearch.search.storage import (
    fail_dead_trials,
    heartbeat_thread,
    open_storage,
    record_heartbeat,
    storage_url,
)
from layersearch.settings import StudySettings
from layersearch.trial import builtin, outcome

SMOKE = ["preset=smoke", "search_space.baselines=[]"]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('tracking')}/mlflow.db"


def _study(url: str, name: str = "s") -> optuna.Study:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.create_study(study_name=name, storage=open_storage(url, **storage_args(heartbeat_s=1, grace_s=2)),
                                   load_if_exists=True)


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_reservation_gives_exactly_n_trials_under_a_race(tmp_path, kind):
    # Eight threads (each with its own storage handle, as separate workers have) ask as fast as they can.
    url = f"sqlite:///{tmp_path}/o.db" if kind == "sqlite" else f"journal:///{tmp_path}/j.log"
    _study(url)
    ran: list[int] = []

    def worker() -> None:
        study = _study(url)
        while True:
            trial, done = reserve_trial(study, url, 5)
            if trial is None:
                if done >= 5:
                    return
                time.sleep(0.01)
                continue
            ran.append(trial.number)
            study.tell(trial, 1.0)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    states = [t.state for t in _study(url).trials]
    assert states.count(TrialState.COMPLETE) == 5 and len(states) == 5 and len(ran) == 5


def test_reservation_waits_while_the_last_trials_run_and_frees_a_failed_slot(tmp_path):
    url = f"sqlite:///{tmp_path}/o.db"
    study = _study(url)
    first, _ = reserve_trial(study, url, 2)
    second, _ = reserve_trial(study, url, 2)
    assert reserve_trial(study, url, 2) == (None, 0)  # two running already fill n_trials=2
    study.tell(first, 1.0)
    study.tell(second, state=TrialState.FAIL)  # a failed trial does not count: its slot is free again
    third, done = reserve_trial(study, url, 2)
    assert third is not None and done == 1


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_heartbeat_thread_keeps_a_trial_alive_and_a_dead_one_is_failed_and_retried_once(tmp_path, kind):
    # Optuna's private heartbeat API is used in search/storage/study_storage.py only; this fails if Optuna changes it.
    url = f"sqlite:///{tmp_path}/o.db" if kind == "sqlite" else f"journal:///{tmp_path}/j.log"
    study = _study(url)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.set_user_attr("layer_config", {"content_layers": {"relu2_2": 1.0}})
    with heartbeat_thread(study, trial, every_s=0.3):
        time.sleep(3.5)  # longer than grace (2 s): only the thread's beats keep it alive
        assert fail_dead_trials(study, url, grace_s=2) == []
    time.sleep(3.5)
    dead = fail_dead_trials(study, url, grace_s=2)
    assert [t.number for t in dead] == [0]
    assert fail_dead_trials(study, url, grace_s=2) == []  # failed once, not twice
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["fail_reason"].startswith("worker died: no heartbeat for more than 2 s")
    retry = trials[1]
    assert retry.state == TrialState.WAITING and retry.params == trials[0].params
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == 0
    assert retry.user_attrs == {"layer_config": {"content_layers": {"relu2_2": 1.0}}}  # not the fail reason
    # A retry that dies too is not retried again.
    again = study.ask()
    assert again.number == 1
    record_heartbeat(study, again)
    time.sleep(3.5)
    assert [t.number for t in fail_dead_trials(study, url, grace_s=2)] == [1]
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.FAIL]


def _study_settings(**changes) -> StudySettings:
    """conf's study settings with ``changes``."""
    return replace(load_settings([]).study, **changes)


def test_default_storage_is_a_journal_for_workers_and_keeps_its_kind(tmp_path):
    assert storage_url(_study_settings(name="a", workers=3), tmp_path) == f"journal:///{tmp_path}/a/journal.log"
    assert storage_url(_study_settings(name="a", workers=1), tmp_path) == f"sqlite:///{tmp_path}/a/optuna.db"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "journal.log").write_text("")
    assert storage_url(_study_settings(name="b", workers=1), tmp_path).startswith("journal:")  # readers find it


def test_workers_on_an_existing_sqlite_study_are_refused(tmp_path, monkeypatch, capsys, mlflow_uri):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies" / "old").mkdir(parents=True)
    optuna.create_study(study_name="old", storage=f"sqlite:///{tmp_path}/studies/old/optuna.db")
    assert main(["sweep", *SMOKE, "study.name=old", "study.workers=2", f"tracking.uri={mlflow_uri}"]) == 2
    assert "not safe for 2 concurrent workers" in one_error_line(capsys)


def test_trials_per_device_plan():
    assert gpu_plan(4, 2, ["0", "1"]) == ["0", "0", "1", "1"]
    assert gpu_plan(3, 1, ["3", "5"]) == ["3", "5", "3"]
    assert gpu_plan(2, 2, []) == [None, None]
    study = _study_settings(workers=1, trials_per_device=3)
    assert n_workers(study, ["0", "1"]) == 6  # k per visible GPU
    assert n_workers(study, []) == 3  # on CPU: the same as workers=k
    assert n_workers(_study_settings(workers=4, trials_per_device=2), ["0", "1"]) == 4


def _mlflow_runs(uri: str, name: str) -> list:
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], "tags.`layersearch.trial` != ''")


def test_interrupt_records_the_trial_and_exits_130_or_143_then_resumes(tmp_path, monkeypatch, capsys, mlflow_uri):
    monkeypatch.chdir(tmp_path)
    real_train = builtin.train
    calls = {"n": 0}

    def train(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # Ctrl-C
        if calls["n"] == 3:
            raise loop.Interrupted("signal 15")  # what the SIGTERM handler raises
        return real_train(*args, **kwargs)

    monkeypatch.setattr(builtin, "train", train)
    args = ["sweep", *SMOKE, "study.name=intr", "study.n_trials=2", f"tracking.uri={mlflow_uri}"]
    assert main(args) == 130
    assert main(args) == 143
    assert main(args) == 0  # resumes
    trials = optuna.load_study(study_name="intr", storage=f"sqlite:///{tmp_path}/studies/intr/optuna.db").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    assert [t.user_attrs.get("fail_reason") for t in trials[1:3]] == ["interrupted", "interrupted"]
    runs = {int(r.data.tags["layersearch.trial"]): r for r in _mlflow_runs(mlflow_uri, "intr")}
    assert [runs[n].info.status for n in range(4)] == ["FINISHED", "KILLED", "KILLED", "FINISHED"]
    assert runs[1].data.tags["layersearch.reason"] == "interrupted"


def test_sigterm_handler_raises_interrupted():
    with loop.stop_on_signals(), pytest.raises(loop.Interrupted) as caught:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert caught.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored


OUT_OF_MEMORY = {
    "allocator": torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    "cublas": RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    "cudnn": RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
    "cuda runtime": RuntimeError("CUDA error: out of memory\nCompile with `TORCH_USE_CUDA_DSA` to enable..."),
    "host": RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                         "you tried to allocate 29000000000 bytes"),
}


def _fresh(err: BaseException) -> BaseException:
    # A new instance per raise: a raised exception keeps its traceback, and with it the frames' tensors.
    return type(err)(*err.args)


@pytest.mark.parametrize("kind", ["allocator", "cublas"])
def test_out_of_memory_fails_the_trial_frees_memory_and_the_sweep_goes_on(tmp_path, monkeypatch, mlflow_uri, kind):
    monkeypatch.chdir(tmp_path)
    real_train = builtin.train
    calls = {"n": 0, "empty_cache": 0}

    def train(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise _fresh(OUT_OF_MEMORY[kind])
        return real_train(*args, **kwargs)

    real_free = outcome.free_memory

    def free_memory():
        calls["free"] = calls.get("free", 0) + 1
        real_free()

    monkeypatch.setattr(builtin, "train", train)
    monkeypatch.setattr(outcome, "free_memory", free_memory)
    name = f"oom_{kind}"
    assert main(["sweep", *SMOKE, f"study.name={name}", "study.n_trials=2", f"tracking.uri={mlflow_uri}"]) == 0
    trials = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/studies/{name}/optuna.db").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    reason = " ".join(str(OUT_OF_MEMORY[kind]).split())
    assert trials[0].user_attrs["fail_reason"] == f"out of memory: {reason}"
    assert calls["free"] == 1
    runs = {int(r.data.tags["layersearch.trial"]): r for r in _mlflow_runs(mlflow_uri, name)}
    assert runs[0].info.status == "FAILED" and "out of memory" in runs[0].data.tags["layersearch.reason"]


def test_what_counts_as_out_of_memory():
    assert all(outcome.is_out_of_memory(err) for err in OUT_OF_MEMORY.values())
    assert torch.OutOfMemoryError is torch.cuda.OutOfMemoryError  # one class: catching one catches both
    for other in (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), ValueError("CUDA out of memory"),
                  RuntimeError("CUDA error: device-side assert triggered"), MemoryError()):
        assert not outcome.is_out_of_memory(other), other


def test_a_failed_trial_leaves_nothing_alive_when_the_next_one_starts(tmp_path):
    import weakref

    from layersearch.trial.handle import Trial

    held = []

    class Training:
        kind, user_code = "builtin", False

        def __call__(self, trial):
            activations = torch.ones(1024, 1024)  # what a trial holds when the allocation after it fails
            held.append(weakref.ref(activations))
            raise _fresh(OUT_OF_MEMORY["cublas"])

    trial = Trial(number=0, study_name="s", params={}, layer_config={"content_layers": {}, "pixel_weight": 1.0},
                  steps=1, seed=0, device="cpu", dir=tmp_path, objectives=["lpips"])
    result = outcome.run_training(Training(), trial)
    assert result.state == "FAIL" and result.reason.startswith("out of memory: CUDA error: CUBLAS_STATUS_ALLOC")
    assert result.bug is None  # layersearch's own training: still not a bug, the sweep goes on
    assert held and held[0]() is None  # the traceback's frames were let go, so the memory was given back


def test_free_memory_empties_the_cuda_cache(monkeypatch):
    emptied = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    outcome.free_memory()
    assert emptied == [True]


def test_mlflow_error_mid_sweep_warns_once_keeps_optuna_and_is_backfilled(tmp_path, monkeypatch, mlflow_uri,
                                                                          capsys):
    monkeypatch.chdir(tmp_path)
    real = mlflow.MlflowClient.set_terminated
    calls = {"n": 0}

    def flaky(self, run_id, status=None, end_time=None):
        calls["n"] += 1
        if calls["n"] in (1, 2):  # the first two trials cannot be closed
            raise mlflow.exceptions.MlflowException("database is locked")
        return real(self, run_id, status, end_time)

    monkeypatch.setattr(mlflow.MlflowClient, "set_terminated", flaky)
    args = ["sweep", *SMOKE, "study.name=flaky", "study.n_trials=3", f"tracking.uri={mlflow_uri}"]
    assert main(args) == 0
    mlflow_warnings = [line for line in capsys.readouterr().err.splitlines() if "MLflow error" in line]
    assert len(mlflow_warnings) == 1 and "database is locked" in mlflow_warnings[0]
    trials = optuna.load_study(study_name="flaky", storage=f"sqlite:///{tmp_path}/studies/flaky/optuna.db").trials
    assert sum(t.state in FINISHED for t in trials) == 3
    assert sum(r.info.status == "RUNNING" for r in _mlflow_runs(mlflow_uri, "flaky")) == 2
    # The next sweep (nothing left to run) makes MLflow agree with Optuna.
    assert main(args) == 0
    runs = _mlflow_runs(mlflow_uri, "flaky")
    assert sorted(int(r.data.tags["layersearch.trial"]) for r in runs) == [t.number for t in trials]
    assert all(r.info.status != "RUNNING" for r in runs)


def test_mlflow_backfill_creates_missing_runs(tmp_path, monkeypatch, mlflow_uri):
    monkeypatch.chdir(tmp_path)
    args = ["sweep", *SMOKE, "study.name=gap", "study.n_trials=2", f"tracking.uri={mlflow_uri}"]
    assert main(args) == 0
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
    lost = [r for r in _mlflow_runs(mlflow_uri, "gap") if r.data.tags["layersearch.trial"] == "1"][0]
    client.delete_run(lost.info.run_id)
    assert main(args) == 0
    runs = {r.data.tags["layersearch.trial"]: r for r in _mlflow_runs(mlflow_uri, "gap")}
    assert runs["1"].data.tags["layersearch.backfilled"] == "true"
    assert runs["1"].info.status == "FINISHED" and "lpips" in runs["1"].data.metrics
    assert runs["1"].info.run_name.startswith("#1 ")


def _running_trial_of_a_worker(storage_url_: str, name: str, exclude_pid: int):
    """(trial number, worker pid) of a RUNNING trial that has its layer config (it is training), or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study = optuna.load_study(study_name=name, storage=open_storage(storage_url_, create=False, **storage_args()))
    except Exception:
        return None
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker", "")
        if worker and int(worker.rsplit(":", 1)[1]) != exclude_pid and t.user_attrs.get("layer_config"):
            return t.number, int(worker.rsplit(":", 1)[1])
    return None


# Built-in trials of about 2 s, for tests that need training to go on during an event (tests/search/test_blips.py).
KILL_ARGS = ["trainer.steps=24", "trainer.eval_every=6", "study.heartbeat_s=0.5", "study.grace_s=4",
             "study.n_startup_trials=2"]


def started_trial(tmp_path: Path, name: str, exclude: set[int] = frozenset()):
    """(trial number, pid of the process running it) of a trial that is blocked mid-run, or None."""
    for path in sorted((tmp_path / "studies" / name / "trials").glob("*/started")):
        pid = int(path.read_text())
        if pid not in exclude:
            return int(path.parent.name), pid
    return None


def check_killed_worker_study(storage: str, tracking: str, name: str, n_trials: int, killed: int) -> None:
    """The done-when checks: exactly n_trials finished, none running, the dead trial failed and retried."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trials = optuna.load_study(study_name=name, storage=open_storage(storage, create=False, **storage_args())).get_trials()
    assert sum(t.state in FINISHED for t in trials) == n_trials
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    dead = trials[killed]
    assert dead.state == TrialState.FAIL and dead.user_attrs["fail_reason"].startswith("worker died")
    retries = [t for t in trials if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed]
    assert len(retries) == 1 and retries[0].params == dead.params and retries[0].state in FINISHED
    assert retries[0].user_attrs["layer_config"] == dead.user_attrs["layer_config"]
    assert retries[0].user_attrs["retry_of"] == killed
    runs = _mlflow_runs(tracking, name)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    dead_runs = [r for r in runs if r.data.tags["layersearch.trial"] == str(killed)]
    assert [r.info.status for r in dead_runs] == ["KILLED"]
    assert dead_runs[0].data.tags["layersearch.reason"].startswith("worker died")
    retry_run = [r for r in runs if r.data.tags["layersearch.trial"] == str(retries[0].number)][0]
    assert retry_run.data.tags["layersearch.retry_of"] == str(killed)
    assert f"(retry of #{killed})" in retry_run.info.run_name


# Trials that block mid-run until the test creates the "go" file (tests/user_trainings.py): a kill or a signal
# lands mid-trial by construction. A grace of 4 s notices a dead worker quickly.
BLOCKING = ["trial=python", "trial.fn=user_trainings:waits_for_file", "study.objectives=[quality]",
            "study.directions=[minimize]", "study.heartbeat_s=0.5", "study.grace_s=4", "study.pruner=none"]


def blocking_env(tmp_path: Path) -> dict[str, str]:
    """Workers import user_trainings from tests/, and its trials wait for ``tmp_path/go``."""
    return {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "USER_TRAININGS_GO": str(tmp_path / "go")}


def test_two_workers_on_a_journal_one_killed_mid_trial(tmp_path):
    n_trials = 5
    with Watched([console_script(), "sweep", *SMOKE, *BLOCKING, "study.name=kill", f"study.n_trials={n_trials}",
                  "study.workers=2"], tmp_path, **blocking_env(tmp_path)) as sweep:
        killed, pid = sweep.wait_for(lambda: started_trial(tmp_path, "kill", {sweep.proc.pid}), 300,
                                     "a worker's trial to start")
        os.kill(pid, signal.SIGKILL)
        (tmp_path / "go").touch()  # every other trial, and the retry of the killed one, may now finish
        assert sweep.finish(600) == 0, sweep.output[-3000:]
        out = sweep.output
    assert "was killed by signal 9" in out
    assert out.count("exited with status") == 0  # the surviving worker ended with 0
    storage = f"journal:///{tmp_path}/studies/kill/journal.log"
    check_killed_worker_study(storage, f"sqlite:///{tmp_path}/studies/mlflow.db", "kill", n_trials, killed)
    logs = sorted(Path(tmp_path / "studies/kill/logs").glob("worker-*.log"))
    assert len(logs) == 2 and all(p.read_text() for p in logs)


@pytest.mark.slow
def test_two_sweeps_started_together_on_a_new_default_study_share_it(tmp_path):
    args = [console_script(), "sweep", *SMOKE, "study.name=both", "study.n_trials=3"]
    procs = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-2000:] for o in outs]
    trials = optuna.load_study(study_name="both", storage=f"sqlite:///{tmp_path}/studies/both/optuna.db").trials
    assert sum(t.state in FINISHED for t in trials) == 3
    assert len(_mlflow_runs(f"sqlite:///{tmp_path}/studies/mlflow.db", "both")) == len(trials)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_real_signal_mid_trial(tmp_path, sig, code):
    args = [console_script(), "sweep", *SMOKE, *BLOCKING, "study.name=sig", "study.n_trials=2"]
    with Watched(args, tmp_path, **blocking_env(tmp_path)) as sweep:
        number, _ = sweep.wait_for(lambda: started_trial(tmp_path, "sig"), 300, "a trial to start")
        sweep.proc.send_signal(sig)
        assert sweep.finish(300) == code, sweep.output[-2000:]
    storage = f"sqlite:///{tmp_path}/studies/sig/optuna.db"
    trials = optuna.load_study(study_name="sig", storage=storage).trials
    assert trials[number].state == TrialState.FAIL and trials[number].user_attrs["fail_reason"] == "interrupted"
    (tmp_path / "go").touch()
    with Watched(args, tmp_path, **blocking_env(tmp_path)) as again:
        assert again.finish(600) == 0, again.output[-2000:]
    trials = optuna.load_study(study_name="sig", storage=storage).trials
    assert sum(t.state in FINISHED for t in trials) == 2
