"""Storage URLs, the one sqlite-path parser, and the heartbeat wrapper around Optuna's private API."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import optuna
import pytest
from helpers import smoke

from layersearch.search.storage import (
    StudyError,
    heartbeat_thread,
    load_study,
    record_heartbeat,
    sqlite_path,
    storage_url,
)


def test_default_storage_lives_in_the_studies_dir():
    assert storage_url({"name": "sr1", "storage": None}, "studies") == "sqlite:///studies/sr1/optuna.db"
    assert storage_url({"name": "sr1", "storage": None}, "/data/runs") == "sqlite:////data/runs/sr1/optuna.db"
    assert storage_url({"name": "sr1", "storage": "postgresql://u@h/db"}, "studies") == "postgresql://u@h/db"


def test_paths_group_moves_the_default_stores():
    cfg = smoke("paths.studies_dir=/tmp/elsewhere")
    assert cfg["tracking"]["uri"] == "sqlite:////tmp/elsewhere/mlflow.db"
    assert storage_url(cfg["study"], cfg["paths"]["studies_dir"]).startswith("sqlite:////tmp/elsewhere/")


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///studies/mlflow.db", Path("studies/mlflow.db")),
        ("sqlite:////abs/x.db?timeout=5", Path("/abs/x.db")),
        ("sqlite:///:memory:", None),
        ("postgresql://u:p@h/db", None),
        ("file:///tmp/mlruns", None),
    ],
)
def test_sqlite_path(url, path):
    assert sqlite_path(url) == path


def test_load_study_names_what_is_there(tmp_path):
    url = f"sqlite:///{tmp_path}/s/optuna.db"
    with pytest.raises(StudyError, match="no study storage"):
        load_study({"name": "s", "storage": url}, tmp_path)
    (tmp_path / "s").mkdir()
    optuna.create_study(study_name="other", storage=url)
    with pytest.raises(StudyError, match="studies there: other"):
        load_study({"name": "s", "storage": url}, tmp_path)


def running_trial_with_1s_grace(tmp_path) -> tuple[optuna.Study, optuna.Trial]:
    """One RUNNING trial in a SQLite study whose heartbeat grace period is 1 s."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/hb.db", heartbeat_interval=1, grace_period=1)
        study = optuna.create_study(storage=storage)
        return study, study.ask()


def test_record_heartbeat_keeps_a_trial_alive_and_its_absence_fails_it(tmp_path):
    # record_heartbeat wraps Optuna's private storage API; this fails if Optuna changes it.
    study, trial = running_trial_with_1s_grace(tmp_path)
    record_heartbeat(study, trial)
    time.sleep(0.5)
    record_heartbeat(study, trial)
    optuna.storages.fail_stale_trials(study)
    assert study.trials[0].state == optuna.trial.TrialState.RUNNING  # beat within the grace period
    time.sleep(2.5)
    optuna.storages.fail_stale_trials(study)
    assert study.trials[0].state == optuna.trial.TrialState.FAIL  # no beat for longer than the grace period


def test_heartbeat_thread_keeps_a_trial_alive_while_the_block_runs(tmp_path):
    study, trial = running_trial_with_1s_grace(tmp_path)
    with heartbeat_thread(study, trial, 0.2):
        time.sleep(2.5)  # longer than the grace period, with no beat from this thread
        optuna.storages.fail_stale_trials(study)
        assert study.trials[0].state == optuna.trial.TrialState.RUNNING
    time.sleep(2.5)  # the thread has stopped
    optuna.storages.fail_stale_trials(study)
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
