"""Storage URLs, the one sqlite-path parser, and the heartbeat wrapper around Optuna's private API."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from helpers import smoke, wait_until

from layersearch.config import load_settings
from layersearch.search.storage import (
    StudyError,
    heartbeat_thread,
    load_study,
    record_heartbeat,
    sqlite_path,
    storage_url,
)
from layersearch.search.storage import study_storage as storage_module
from layersearch.settings import StudySettings


def study(**changes) -> StudySettings:
    """conf's study settings with ``changes``."""
    return replace(load_settings([]).study, **changes)


def test_default_storage_lives_in_the_studies_dir():
    assert storage_url(study(name="sr1", storage=None), "studies") == "sqlite:///studies/sr1/optuna.db"
    assert storage_url(study(name="sr1", storage=None), "/data/runs") == "sqlite:////data/runs/sr1/optuna.db"
    assert storage_url(study(name="sr1", storage="postgresql://u@h/db"), "studies") == "postgresql://u@h/db"


def test_paths_group_moves_the_default_stores():
    cfg = smoke("paths.studies_dir=/tmp/elsewhere")
    assert cfg.tracking.uri == "sqlite:////tmp/elsewhere/mlflow.db"
    assert storage_url(cfg.study, cfg.paths.studies_dir).startswith("sqlite:////tmp/elsewhere/")


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
        load_study(study(name="s", storage=url), tmp_path)
    (tmp_path / "s").mkdir()
    optuna.create_study(study_name="other", storage=url)
    with pytest.raises(StudyError, match="studies there: other"):
        load_study(study(name="s", storage=url), tmp_path)


def running_trial_with_grace(tmp_path, grace_s: int = 1) -> tuple[optuna.Study, optuna.Trial]:
    """One RUNNING trial in a SQLite study whose heartbeat grace period is ``grace_s``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/hb.db", heartbeat_interval=1,
                                             grace_period=grace_s)
        study = optuna.create_study(storage=storage)
        return study, study.ask()


def failed_as_stale(study: optuna.Study) -> bool:
    optuna.storages.fail_stale_trials(study)
    return study.trials[0].state == optuna.trial.TrialState.FAIL


def test_record_heartbeat_keeps_a_trial_alive_and_its_absence_fails_it(tmp_path):
    # record_heartbeat wraps Optuna's private storage API; this fails if Optuna changes it.
    study, trial = running_trial_with_grace(tmp_path, grace_s=5)
    record_heartbeat(study, trial)
    assert not failed_as_stale(study)  # beat well within the grace period
    # No more beats: failed once the grace period has passed (waited for, not guessed).
    wait_until(lambda: failed_as_stale(study), "the trial to be failed as stale", limit=60)


def test_heartbeat_thread_keeps_a_trial_alive_while_the_block_runs(tmp_path, monkeypatch):
    study, trial = running_trial_with_grace(tmp_path, grace_s=2)
    beats: list[int] = []

    def counted(study_, trial_):
        beats.append(1)
        record_heartbeat(study_, trial_)

    monkeypatch.setattr(storage_module, "record_heartbeat", counted)
    with heartbeat_thread(study, trial, 0.1):
        # Alive past the grace period because the thread keeps beating: 40 beats of 0.1 s is two grace periods.
        wait_until(lambda: len(beats) >= 40, "40 beats of the thread", limit=120)
        assert not failed_as_stale(study)
    wait_until(lambda: failed_as_stale(study), "the trial to be failed once the thread stopped", limit=60)
