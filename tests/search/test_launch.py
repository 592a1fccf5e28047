"""Launching workers: local processes (logs without passwords) and SLURM arrays through submitit."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path

import mlflow
import optuna
import pytest
from conftest import PG_PASSWORD
from helpers import console_script, fake_gpus, smoke
from optuna.trial import TrialState
from test_workers import SMOKE

from layersearch.search.loop import launch
from layersearch.search.storage import database_url, scrub
from layersearch.settings import Settings

SECRET_URL = "postgresql://alice:pw-s3cret@db.example/optuna"


def _cfg(tmp_path: Path) -> Settings:
    s = smoke("launcher=slurm")
    return replace(s, study=replace(s.study, name="w", storage=SECRET_URL, seed=0),
                   tracking=replace(s.tracking, uri="postgresql://bob:tr-s3cret@db.example/mlflow"),
                   paths=replace(s.paths, studies_dir=str(tmp_path / "studies")),
                   launcher=replace(s.launcher, name="slurm", cluster="local", array_size=2, wait=True))


def _device(cfg: Settings, device: str) -> Settings:
    return replace(cfg, trainer=replace(cfg.trainer, device=device))


def test_scrub_removes_passwords_from_foreign_text():
    text = "OperationalError: connection to postgresql://alice:pw-s3cret@db.example/optuna failed; pw=pw-s3cret"
    clean = scrub(text, SECRET_URL)
    assert "pw-s3cret" not in clean and "alice:***@db.example" in clean


def test_worker_output_and_logs_have_no_password(tmp_path, monkeypatch, capsys):
    # A worker that prints its storage URL and the bare password (as a driver error might).
    script = "import json, os; c = json.loads(os.environ['LAYERSEARCH_WORKER_CONFIG']); " \
             "print('cannot open', c['study']['storage'], 'password', 'pw-s3cret', 'seed', c['study']['seed'])"
    monkeypatch.setattr(launch, "WORKER_COMMAND", [sys.executable, "-c", script])
    codes = launch._run_local(_cfg(tmp_path), 2, [None, None])
    assert codes == {0: 0, 1: 0}
    out = capsys.readouterr().out
    logs = sorted((tmp_path / "studies/w/logs").glob("worker-*.log"))
    assert len(logs) == 2
    for text in [out] + [p.read_text() for p in logs]:
        assert "cannot open postgresql://alice:***@db.example/optuna" in text
        assert "s3cret" not in text
    assert "seed 0" in logs[0].read_text() and "seed 1" in logs[1].read_text()  # a sampler seed each


def test_slurm_submission_holds_no_password(tmp_path, monkeypatch):
    submitted = {}

    class FakeJob:
        job_id = "42_0"

        def result(self):
            return 0

    class FakeExecutor:
        def __init__(self, folder, cluster=None):
            submitted["folder"], submitted["cluster"] = folder, cluster

        def update_parameters(self, **kwargs):
            submitted["params"] = kwargs

        def map_array(self, fn, args):
            submitted["payload"] = pickle.dumps((fn, args))
            return [FakeJob() for _ in args]

    monkeypatch.setitem(sys.modules, "submitit", types.SimpleNamespace(AutoExecutor=FakeExecutor))
    monkeypatch.delenv(launch.STORAGE_ENV, raising=False)
    monkeypatch.delenv(launch.TRACKING_ENV, raising=False)
    cfg = _cfg(tmp_path)
    cfg = replace(cfg, launcher=replace(cfg.launcher, partition="gpu", gpus_per_job=2, time_min=30))
    assert launch._run_slurm(cfg, 2) == {0: 0, 1: 0}
    assert b"s3cret" not in submitted["payload"] and b"alice:***@db.example" in submitted["payload"]
    assert os.environ[launch.STORAGE_ENV] == SECRET_URL  # exported to the jobs by sbatch, not written
    assert submitted["params"]["slurm_partition"] == "gpu" and submitted["params"]["gpus_per_node"] == 2
    assert submitted["params"]["timeout_min"] == 30 and submitted["params"]["slurm_array_parallelism"] == 2
    _, args = pickle.loads(submitted["payload"])
    assert [a["study"]["seed"] for a in args] == [0, 1]


@pytest.mark.slow
def test_slurm_array_through_submitits_local_executor(postgres_db, postgres_tracking, tmp_path):
    args = [console_script(), "sweep", *SMOKE, "study.name=sl", "study.n_trials=3", "launcher=slurm",
            "launcher.cluster=local", "launcher.array_size=2", f"study.storage={postgres_db}",
            f"tracking.uri={postgres_tracking}", f"tracking.artifacts={tmp_path}/artifacts"]
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "submitted 2 SLURM jobs" in done.stdout
    study = optuna.load_study(study_name="sl", storage=database_url(postgres_db))
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 3
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert len(workers) >= 1
    client = mlflow.MlflowClient(tracking_uri=database_url(postgres_tracking))
    runs = client.search_runs([client.get_experiment_by_name("sl").experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]
    folder = tmp_path / "studies/sl/slurm"
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert any(p.name.endswith("_submitted.pkl") for p in files)
    for path in [*files, *tmp_path.joinpath("studies").rglob("*.log")]:
        assert PG_PASSWORD.encode() not in path.read_bytes(), path
    assert PG_PASSWORD not in done.stdout + done.stderr


WORKER_ENV_SCRIPT = ("import json, os; print('gpu', os.environ.get('CUDA_VISIBLE_DEVICES'), 'omp', "
                     "os.environ.get('OMP_NUM_THREADS'), 'share', os.environ.get('LAYERSEARCH_TRIALS_PER_DEVICE'), "
                     "'device', json.loads(os.environ['LAYERSEARCH_WORKER_CONFIG'])['trainer']['device'])")


def _worker_lines(tmp_path: Path, n: int) -> list[list[str]]:
    # The last line of each log (logs are appended to, run after run).
    return [(tmp_path / f"studies/w/logs/worker-{i}.log").read_text().splitlines()[-1].split()[1::2] for i in range(n)]


def test_workers_are_pinned_to_their_gpu_and_share_the_cores(tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "WORKER_COMMAND", [sys.executable, "-c", WORKER_ENV_SCRIPT])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0))
    cfg = _device(_cfg(tmp_path), "cuda:1")
    launch._run_local(cfg, 4, launch.gpu_plan(4, 2, ["0", "1"]))
    # Each worker sees its GPU alone, as cuda:0, knows how many trials share it, and gets its share of the
    # cores: GPU workers too (their scoring and data work run on the CPU).
    share = str(max(1, cores // 4))
    assert _worker_lines(tmp_path, 4) == [["0", share, "2", "cuda"], ["0", share, "2", "cuda"],
                                          ["1", share, "2", "cuda"], ["1", share, "2", "cuda"]]
    launch._run_local(_device(cfg, "cpu"), 2, [None, None])  # CPU workers share the cores
    assert _worker_lines(tmp_path, 2) == [["None", str(max(1, cores // 2)), "None", "cpu"]] * 2
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # the user's own setting is kept
    launch._run_local(_device(cfg, "auto"), 2, ["3", "3"])
    assert _worker_lines(tmp_path, 2) == [["3", "7", "2", "auto"]] * 2


def test_an_explicit_gpu_index_pins_every_worker_to_that_gpu(monkeypatch):
    from layersearch.trial.train import DeviceError

    fake_gpus(monkeypatch, ["Fake GPU"] * 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")

    cfg = smoke()

    def gpus(device: str) -> list[str]:
        return launch._visible_gpus(_device(cfg, device))

    assert gpus("auto") == gpus("cuda") == ["4", "6"]
    assert gpus("cuda:1") == ["6"]  # the second visible GPU, for every worker
    assert gpus("cpu") == []
    assert launch.gpu_plan(2, 2, gpus("cuda:1")) == ["6", "6"]
    with pytest.raises(DeviceError, match=r"cuda:2 but this process sees 2 CUDA device\(s\)"):
        gpus("cuda:2")


def test_a_sweep_on_a_gpu_index_that_does_not_exist_exits_2_before_any_worker(tmp_path, monkeypatch, capsys):
    from helpers import one_error_line

    from layersearch.cli import main

    fake_gpus(monkeypatch, ["Fake GPU"])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(launch, "_run_local", lambda *a: pytest.fail("started workers"))
    args = ["sweep", *SMOKE, "study.name=idx", "trainer.device=cuda:1", "study.trials_per_device=2",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]
    assert main(args) == 2
    assert one_error_line(capsys) == ("layersearch sweep: trainer.device=cuda:1 but this process sees 1 CUDA "
                                      "device(s): cuda:0 (Fake GPU)")
