"""PostgreSQL for the study storage and the MLflow tracking store, against a real server (conftest.py)."""

from __future__ import annotations

import os
import signal
import threading
import warnings

import mlflow
import optuna
import pytest
from conftest import PG_PASSWORD
from helpers import Watched, console_script, storage_args
from optuna.trial import TrialState
from test_workers import BLOCKING, SMOKE, blocking_env, check_killed_worker_study, started_trial

from layersearch.search.storage import database_url, open_storage, storage_lock
from layersearch.search.tracking import StudyTracker


def test_postgres_storage_and_schema_creation_race(postgres_db, postgres_tracking, tmp_path):
    # Four threads create Optuna's and MLflow's schemas on one new database at the same moment.
    errors: list[BaseException] = []
    times = storage_args()  # composed here: Hydra's compose is not thread-safe

    def start() -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                storage = open_storage(postgres_db, **times)
                with storage_lock(postgres_db):
                    optuna.create_study(study_name="race", storage=storage, load_if_exists=True)
            StudyTracker(postgres_tracking, "race", postgres_db, artifacts=str(tmp_path / "artifacts"))
        except BaseException as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    assert optuna.study.get_all_study_names(open_storage(postgres_db, **storage_args())) == ["race"]
    client = mlflow.MlflowClient(tracking_uri=database_url(postgres_tracking))
    exp = client.get_experiment_by_name("race")
    assert exp.artifact_location == (tmp_path / "artifacts" / "race").as_uri()
    assert PG_PASSWORD not in str(exp.tags)


def test_database_tracking_store_needs_artifacts(postgres_db, postgres_tracking, tmp_path, monkeypatch, capsys):
    from helpers import one_error_line

    from layersearch.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["sweep", *SMOKE, "study.name=art", f"study.storage={postgres_db}",
                 f"tracking.uri={postgres_tracking}"])
    assert code == 2
    line = one_error_line(capsys)
    assert "set tracking.artifacts" in line and PG_PASSWORD not in line
    assert not (tmp_path / "mlruns").exists()
    # One database for both: refused before anything is written (both keep an `alembic_version` table).
    code = main(["sweep", *SMOKE, "study.name=art", f"study.storage={postgres_db}", f"tracking.uri={postgres_db}",
                 f"tracking.artifacts={tmp_path}/a"])
    assert code == 2 and "separate databases" in one_error_line(capsys)


def test_sweep_on_postgres_redacts_everything(postgres_db, postgres_tracking, tmp_path, monkeypatch, capsys):
    from layersearch.cli import main

    monkeypatch.chdir(tmp_path)
    args = ["sweep", *SMOKE, "study.name=pg", "study.n_trials=2", f"study.storage={postgres_db}",
            f"tracking.uri={postgres_tracking}", f"tracking.artifacts={tmp_path}/artifacts"]
    assert main(args) == 0
    out = capsys.readouterr()
    assert PG_PASSWORD not in out.out + out.err and "layersearch:***@127.0.0.1" in out.out
    study = optuna.load_study(study_name="pg", storage=database_url(postgres_db))
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 2
    client = mlflow.MlflowClient(tracking_uri=database_url(postgres_tracking))
    exp = client.get_experiment_by_name("pg")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 3  # two trials and the summary
    for run in runs:
        assert PG_PASSWORD not in str(run.data.params) + str(run.data.tags)
        assert run.info.artifact_uri.startswith((tmp_path / "artifacts").as_uri())
    assert not (tmp_path / "mlruns").exists()
    assert main(["export", *SMOKE, "study.name=pg", f"study.storage={postgres_db}"]) == 0
    exported = (tmp_path / "studies/pg/best.yaml").read_text()
    assert PG_PASSWORD not in exported and "layersearch:***@" in exported


@pytest.mark.slow
def test_three_workers_on_postgres_one_killed(postgres_db, postgres_tracking, tmp_path):
    """Done-when: 3 workers, n_trials=12, one SIGKILLed mid-trial: exactly 12, nothing running, retry."""
    n_trials = 12
    args = [console_script(), "sweep", *SMOKE, *BLOCKING, "study.name=pg3", f"study.n_trials={n_trials}",
            f"study.storage={postgres_db}", f"tracking.uri={postgres_tracking}",
            f"tracking.artifacts={tmp_path}/artifacts"]
    sweeps = [Watched(args, tmp_path, **blocking_env(tmp_path)) for _ in range(3)]
    try:
        pids = {s.proc.pid for s in sweeps}
        # Three separate sweeps (the processes started by hand on three machines): a trial of one is blocked.
        killed, pid = sweeps[0].wait_for(lambda: (found := started_trial(tmp_path, "pg3")) and found[1] in pids
                                         and found, 300, "a trial to start")
        os.kill(pid, signal.SIGKILL)
        (tmp_path / "go").touch()
        codes = {s.proc.pid: s.finish(600) for s in sweeps}
    finally:
        for s in sweeps:
            s.__exit__()
    for s in sweeps:
        if s.proc.pid == pid:
            assert codes[pid] == -signal.SIGKILL
        else:
            assert codes[s.proc.pid] == 0, s.output[-3000:]
            assert PG_PASSWORD not in s.output
    check_killed_worker_study(postgres_db, database_url(postgres_tracking), "pg3", n_trials, killed)
