"""Real infrastructure blips in the middle of a sweep: a PostgreSQL restart and an MLflow server restart.

Each test starts its own server (a session-wide one must not be stopped under other tests), waits for
events (a running trial, the sweep's "unreachable" line, a trial told while the server is down), never for
a guessed time, and kills every process it started.
"""

from __future__ import annotations

import urllib.request
import warnings

import mlflow
import optuna
import pytest
from conftest import PG_PASSWORD, new_db
from helpers import Watched, console_script, free_port, storage_args
from optuna.trial import TrialState
from test_workers import FINISHED, KILL_ARGS, SMOKE, _running_trial_of_a_worker

from layersearch.search.dashboards import UI_ENV, ui_command
from layersearch.search.storage import database_url, open_storage

pytestmark = pytest.mark.slow


def _trials(storage: str, name: str) -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.load_study(study_name=name, storage=open_storage(storage, create=False, **storage_args())).get_trials()


def _check_study(storage: str, tracking: str, name: str, n_trials: int) -> None:
    """Exactly n_trials finished, nothing RUNNING or WAITING, and every trial has a closed MLflow run."""
    trials = _trials(storage, name)
    assert sum(t.state in FINISHED for t in trials) == n_trials
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    client = mlflow.MlflowClient(tracking_uri=tracking)
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id], "tags.`layersearch.trial` != ''")
    assert sorted(int(r.data.tags["layersearch.trial"]) for r in runs) == [t.number for t in trials]
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_a_postgres_restart_mid_sweep_is_waited_out(own_postgres, tmp_path):
    storage, tracking = new_db(own_postgres.url), new_db(own_postgres.url)
    n_trials = 6
    args = [console_script(), "sweep", *SMOKE, "study.name=blip", f"study.n_trials={n_trials}",
            f"study.storage={storage}", f"tracking.uri={tracking}", f"tracking.artifacts={tmp_path}/artifacts",
            *KILL_ARGS]
    with Watched(args, tmp_path) as sweep:
        sweep.wait_for(lambda: _running_trial_of_a_worker(storage, "blip", -1), 300, "a running trial")
        own_postgres.stop()  # "fast": every client's connection is closed, as in a restart or failover
        sweep.wait_for(lambda: "unreachable" in sweep.output, 120, "the sweep to notice the outage")
        own_postgres.start()
        code = sweep.finish(600)
    out = sweep.output
    assert code == 0, out[-4000:]
    assert "reachable again after" in out and "Traceback" not in out, out[-4000:]
    assert PG_PASSWORD not in out
    _check_study(storage, database_url(tracking), "blip", n_trials)



def _serving(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/health", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def test_an_mlflow_server_restarted_mid_sweep_is_waited_out(tmp_path):
    port, folder = free_port(), tmp_path / "server"
    folder.mkdir()
    backend, base = f"sqlite:///{folder}/mlflow.db", f"http://127.0.0.1:{port}"
    n_trials = 6
    args = [console_script(), "sweep", *SMOKE, "study.name=srv", f"study.n_trials={n_trials}",
            f"tracking.uri={base}", *KILL_ARGS]
    storage = f"sqlite:///{tmp_path}/studies/srv/optuna.db"

    with Watched(ui_command(backend, port), folder, **UI_ENV) as server:
        server.wait_for(lambda: _serving(base), 300, "the MLflow server")
        with Watched(args, tmp_path) as sweep:
            running, _ = sweep.wait_for(lambda: _running_trial_of_a_worker(storage, "srv", -1), 300,
                                        "a running trial")
            server.__exit__()  # the server and its workers are gone (the group is killed and reaped)
            assert not _serving(base)
            # The trial goes on training and logs to MLflow at every evaluation while the server restarts.
            with Watched(ui_command(backend, port), folder, **UI_ENV) as again:
                again.wait_for(lambda: _serving(base), 300, "the restarted MLflow server")
                code = sweep.finish(600)
                out = sweep.output
                assert code == 0, out[-4000:]
                # Survived without a lost call: no tolerated MLflow error, and MLflow's "View run" lines stay out.
                assert "MLflow error" not in out and "View run" not in out and "Traceback" not in out, out[-4000:]
                _check_study(storage, base, "srv", n_trials)
                client = mlflow.MlflowClient(tracking_uri=base)
                [run] = client.search_runs([client.get_experiment_by_name("srv").experiment_id],
                                           f"tags.`layersearch.trial` = '{running}'")
                logged = {m.step for m in client.get_metric_history(run.info.run_id, "lpips")}
                reported = {int(step) for step in _trials(storage, "srv")[running].user_attrs["intermediate"]}
                assert reported and reported <= logged  # every evaluation of the trial cut by the restart
