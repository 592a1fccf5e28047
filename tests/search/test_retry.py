"""Database blips: what counts as transient, the bounded wait with its two lines, and writes whose commit
landed while the connection dropped (simulated on a real PostgreSQL server, conftest.py)."""

from __future__ import annotations

import errno
import sqlite3
import time
import warnings

import optuna
import pytest
import sqlalchemy.exc as sa
from conftest import PG_PASSWORD
from helpers import storage_args
from optuna.trial import TrialState

from layersearch.search.storage import StudyError, open_storage, retry, storage_lock
from layersearch.search.storage.resilient import DUPLICATE_REASON, TOKEN_ATTR

psycopg = pytest.importorskip("psycopg")


def _lost() -> sa.OperationalError:
    return sa.OperationalError("SELECT 1", {}, psycopg.OperationalError("server closed the connection unexpectedly"))


def test_only_lost_or_refused_connections_are_transient():
    assert retry.is_transient(_lost())
    try:
        raise optuna.exceptions.StorageInternalError("commit failed") from _lost()  # how Optuna wraps it
    except optuna.exceptions.StorageInternalError as wrapped:
        assert retry.is_transient(wrapped)
    assert retry.is_transient(psycopg.OperationalError("connection refused"))  # the lock's own connection
    assert retry.is_transient(OSError(errno.ESTALE, "stale file handle"))
    # Logic errors are raised at once: SQLite's "no such table", a constraint, a missing file, a bad value.
    assert not retry.is_transient(sa.OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: x")))
    assert not retry.is_transient(sa.IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not retry.is_transient(FileNotFoundError(errno.ENOENT, "gone"))
    assert not retry.is_transient(ValueError("bad"))


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(retry, "FIRST_DELAY_S", 0.01)
    monkeypatch.setattr(retry, "MAX_DELAY_S", 0.05)


def _flaky(failures: int, error=_lost):
    calls = {"n": 0}

    def fn():
        calls["n"] += 1
        if calls["n"] <= failures:
            raise error()
        return "ok"

    return fn, calls


def test_a_blip_is_waited_out_with_one_line_when_it_starts_and_one_when_it_ends(fast, capsys):
    outage = retry.Outage("postgresql://u:hunter2@db/optuna", retry_s=60)
    fn, calls = _flaky(3)
    assert retry.call(outage, fn) == "ok" and calls["n"] == 4
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "hunter2" not in "".join(err)
    assert err[0].startswith("database postgresql://u:***@db/optuna unreachable (server closed the connection")
    assert err[0].endswith("retrying for up to 60 s")
    assert err[1].startswith("database postgresql://u:***@db/optuna reachable again after")
    assert retry.call(outage, fn) == "ok" and capsys.readouterr().err == ""  # healthy: silent


def test_past_the_limit_one_redacted_line_and_later_calls_do_not_wait_again(fast, capsys):
    outage = retry.Outage("postgresql://u:hunter2@db/optuna", retry_s=0.2)
    fn, calls = _flaky(10**6)
    with pytest.raises(StudyError) as caught:
        retry.call(outage, fn)
    message = str(caught.value)
    assert "\n" not in message and "hunter2" not in message
    assert message.startswith("database postgresql://u:***@db/optuna unreachable for more than 0.2 s")
    before = calls["n"]
    with pytest.raises(StudyError):
        retry.call(outage, fn)  # the same outage: its budget is spent, so one attempt
    assert calls["n"] == before + 1


def test_logic_errors_are_not_retried(fast):
    fn, calls = _flaky(1, error=lambda: sa.IntegrityError("INSERT", {}, Exception("duplicate key")))
    with pytest.raises(sa.IntegrityError):
        retry.call(retry.Outage("postgresql://db/x", 60), fn)
    assert calls["n"] == 1


def test_opening_a_store_is_not_retried(fast):
    fn, calls = _flaky(1)
    with retry.single_attempt(), pytest.raises(sa.OperationalError):
        retry.call(retry.Outage("postgresql://db/x", 60), fn)
    assert calls["n"] == 1


# Writes whose COMMIT reaches the database but whose answer is lost with the connection.


@pytest.fixture
def pg_study(postgres_db):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        storage = open_storage(postgres_db, **storage_args(heartbeat_s=1, grace_s=1))
        with storage_lock(postgres_db):
            study = optuna.create_study(study_name="blip", storage=storage)
    return study, storage


def _answer_lost_once(storage, monkeypatch, method: str) -> None:
    """The next commit inside RDBStorage.<method> lands, then its connection 'drops'."""
    armed = {"on": False, "used": False}
    real_commit = storage.engine.dialect.do_commit

    def do_commit(dbapi_connection):
        real_commit(dbapi_connection)
        if armed["on"]:
            armed["on"] = False
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    real_method = getattr(optuna.storages.RDBStorage, method)

    def arming(self, *args, **kwargs):
        armed["on"], armed["used"] = not armed["used"], True  # the first call only, not its repeat
        return real_method(self, *args, **kwargs)

    monkeypatch.setattr(storage.engine.dialect, "do_commit", do_commit)
    monkeypatch.setattr(optuna.storages.RDBStorage, method, arming)


def test_a_trial_created_twice_by_a_lost_answer_is_one_trial(pg_study, monkeypatch, fast):
    study, storage = pg_study
    _answer_lost_once(storage, monkeypatch, "_create_new_trial")
    trial = study.ask()
    monkeypatch.undo()
    trials = study.get_trials()
    running = [t for t in trials if t.state == TrialState.RUNNING]
    assert [t.number for t in running] == [trial.number]
    # Optuna's own retry inserted a second copy; it is failed at once, so it counts nowhere.
    others = [t for t in trials if t.number != trial.number]
    assert all(t.state == TrialState.FAIL for t in others)
    assert all(t.user_attrs["fail_reason"] == DUPLICATE_REASON.format(trial.number) for t in others)
    assert all(t.system_attrs[TOKEN_ATTR] == running[0].system_attrs[TOKEN_ATTR] for t in others)
    study.tell(trial, 1.0)
    assert study.get_trials()[trial.number].state == TrialState.COMPLETE


def test_a_tell_whose_answer_was_lost_is_recorded_once(pg_study, monkeypatch, fast):
    study, storage = pg_study
    trial = study.ask()
    _answer_lost_once(storage, monkeypatch, "set_trial_state_values")
    study.tell(trial, 0.5)  # the repeat meets "already finished" and sees its own values there
    monkeypatch.undo()
    [done] = study.get_trials()
    assert done.state == TrialState.COMPLETE and done.values == [0.5]


def test_a_claim_whose_answer_was_lost_is_beaten_for_so_it_cannot_stay_running(pg_study, monkeypatch, fast):
    study, storage = pg_study
    study.enqueue_trial({"x": 0.5})
    _answer_lost_once(storage, monkeypatch, "set_trial_state_values")
    trial = study.ask()  # our claim of the enqueued trial landed unseen: it looked taken, a new trial came
    monkeypatch.undo()
    orphan = study.get_trials()[0]
    assert trial.number == 1 and orphan.state == TrialState.RUNNING
    # Nobody beats for it, so once the grace (1 s) has passed it is stale: failed and retried by the sweep.
    deadline = time.monotonic() + 60
    while orphan._trial_id not in storage._get_stale_trial_ids(study._study_id):
        assert time.monotonic() < deadline, "the orphaned claim never became stale"
        time.sleep(0.2)


def test_storage_errors_name_no_password(postgres_db):
    assert PG_PASSWORD in postgres_db
    outage = retry.outage_for(postgres_db)
    assert PG_PASSWORD not in str(outage.give_up(_lost()))


def test_a_journal_append_that_fails_midway_is_cut_back_and_written_again(tmp_path, monkeypatch, fast):
    import os

    url = f"journal:///{tmp_path}/journal.log"
    study = optuna.create_study(study_name="j", storage=open_storage(url, **storage_args()))
    real_fsync, calls = os.fsync, {"n": 0}

    def fsync(fd):  # the line is written, then the file system fails before it is on disk
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.EIO, "Input/output error")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    trial = study.ask()
    study.tell(trial, 1.0)
    monkeypatch.undo()
    assert calls["n"] > 1
    again = optuna.load_study(study_name="j", storage=open_storage(url, create=False, **storage_args()))
    assert [(t.number, t.state) for t in again.trials] == [(0, TrialState.COMPLETE)]
    lines = (tmp_path / "journal.log").read_text().splitlines()
    assert len(lines) == len(set(lines))  # no line written twice, none half-written
