"""Where a study lives: opening its storage, heartbeats, and failing the trials of dead workers.

URL parsing and redaction live in `urls` (nothing printed, logged or written by layersearch shows a storage
password), the cross-process locks in `locks`, the waits for database blips in `retry` and `resilient`; their
names are importable from here too.

Storages:
- ``sqlite:///path.db``: the default for one worker; safe for a few processes on one host (writes are
  serialised by SQLite's file lock, start-up by ours).
- ``journal:///path/journal.log``: Optuna's journal file storage, the default for ``study.workers > 1``
  without a server (SQLite is not safe for many concurrent writers).
- ``postgresql://user:password@host/db``: many workers on many machines (needs ``layersearch[postgres]``).
  Calls wait out a lost connection for up to ``study.db_retry_s`` (see `retry`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from ...errors import LayersearchError
from ...settings import StudySettings
from .locks import STORAGE_TIMEOUT_S, storage_lock
from .resilient import RetryingJournalBackend, RetryingRDBStorage
from .retry import single_attempt
from .urls import (
    JOURNAL_PREFIX,
    StudyError,
    check_study_name,
    database_url,
    journal_path,
    redact,
    scrub,
    sqlite_path,
    storage_url,
)

__all__ = [
    "JOURNAL_PREFIX",
    "STORAGE_TIMEOUT_S",
    "StudyError",
    "check_study_name",
    "database_url",
    "fail_dead_trials",
    "heartbeat_thread",
    "journal_path",
    "load_study",
    "open_storage",
    "open_study_storage",
    "record_heartbeat",
    "redact",
    "scrub",
    "sqlite_path",
    "storage_lock",
    "storage_url",
    "within",
]

_OUTCOME_ATTRS = ("fail_reason", "intermediate")
_HEARTBEAT_ATTR = "layersearch:heartbeat"  # journal storages: the time of the last beat (seconds since epoch)

T = TypeVar("T")


def within(seconds: float, fn: Callable[[], T], what: str, url: str, error: type[Exception] = StudyError) -> T:
    """``fn()``, or ``error`` in one line (password removed) if it raises or takes longer than ``seconds``.

    For opening a store: its calls inside are tried once, not retried for ``study.db_retry_s``.
    """

    def once() -> T:
        with single_attempt():
            return fn()

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(once)
    try:
        return future.result(timeout=seconds)
    except concurrent.futures.TimeoutError:
        raise error(f"cannot reach {what} {redact(url)} within {seconds:g} s") from None
    except LayersearchError:
        raise
    except Exception as err:
        message = scrub(" ".join(str(err).split())[:300], url)
        raise error(f"cannot open {what} {redact(url)}: {message}") from None
    finally:
        pool.shutdown(wait=False)


def open_storage(
    url: str, *, heartbeat_s: float, grace_s: float, retry_s: float, create: bool = True,
) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``, reached within STORAGE_TIMEOUT_S or a StudyError (password redacted).

    Opening fails fast (a wrong URL should not wait); once open, calls wait out a lost connection for up to
    ``retry_s`` seconds (see `resilient`).

    Args:
        url: ``sqlite:///...``, ``journal:///...``, ``postgresql://...`` or any SQLAlchemy URL.
        create: False to refuse a missing SQLite/journal file instead of creating it (readers).
        heartbeat_s: how often a running trial's worker beats (the storage's heartbeat interval).
        grace_s: a running trial without a beat for this long belongs to a dead worker.
        retry_s: ``study.db_retry_s``.
    """
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    for path in (sqlite_path(url), journal_path(url)):
        if path is not None:
            if not create and not path.exists():
                raise StudyError(
                    f"no study storage at {path} (run `layersearch sweep` with the same study.name first)"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
    journal = journal_path(url)
    if journal is not None:
        from optuna.storages.journal import JournalFileOpenLock

        # The open-lock (O_EXCL file) works where symlinks do not; both are Optuna's own.
        return within(STORAGE_TIMEOUT_S, lambda: optuna.storages.JournalStorage(RetryingJournalBackend(
            str(journal), lock_obj=JournalFileOpenLock(str(journal)), outage_url=url, retry_s=retry_s,
        )), "study storage", url)
    db_url = database_url(url)
    engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if sqlite_path(url) else {}
    if db_url.startswith("postgresql"):
        # pool_pre_ping: a pooled connection that a server restart or an idle timeout killed is replaced at
        # checkout instead of failing the next call.
        engine_kwargs = {"connect_args": {"connect_timeout": STORAGE_TIMEOUT_S}, "pool_pre_ping": True}

    def rdb_storage() -> optuna.storages.BaseStorage:
        return RetryingRDBStorage(
            db_url, outage_url=url, retry_s=retry_s, engine_kwargs=engine_kwargs,
            heartbeat_interval=max(1, round(heartbeat_s)), grace_period=max(1, round(grace_s)),
        )

    def connect() -> optuna.storages.BaseStorage:
        # Only a writer may be creating the schema; a reader of an existing store takes no lock (and leaves
        # no lock file behind).
        with storage_lock(url) if create else contextlib.nullcontext():
            try:
                return rdb_storage()
            except Exception as err:
                # A reader that opens a SQLite file a writer has just created runs Optuna's CREATE TABLEs at the
                # same moment (it takes no lock): one side sees "table ... already exists". The schema is
                # complete once the other side is done, so opening again succeeds.
                if "already exists" not in str(err):
                    raise
                return rdb_storage()

    return within(STORAGE_TIMEOUT_S, connect, "study storage", url)


def open_study_storage(study: StudySettings, studies_dir: str | Path) -> tuple[Any, str, str]:
    """(storage, URL, name) of the existing study ``study.name``, or a StudyError naming what is there."""
    url = storage_url(study, studies_dir)
    name = study.name
    storage = open_storage(url, create=False, heartbeat_s=study.heartbeat_s, grace_s=study.grace_s,
                           retry_s=study.db_retry_s)
    names = optuna.study.get_all_study_names(storage)
    if name not in names:
        raise StudyError(f"no study named {name!r} in {redact(url)}" + (f"; studies there: {', '.join(names)}" if names else ""))
    return storage, url, name


def load_study(study: StudySettings, studies_dir: str | Path) -> tuple[optuna.Study, str]:
    """An existing study ``study.name`` and its storage URL, or a StudyError naming what is there."""
    storage, url, name = open_study_storage(study, studies_dir)
    return optuna.load_study(study_name=name, storage=storage), url


def record_heartbeat(study: optuna.Study, trial: optuna.Trial) -> None:
    """Mark ``trial`` alive now, so that ``fail_dead_trials`` fails it only once its process is gone.

    Optuna starts a heartbeat thread only inside ``Study.optimize``; an ask/tell loop has no public way to
    beat, so this is one of the two places that use Optuna's private storage API (with
    ``_stale_trial_ids``; tests/search/test_storage.py fails if Optuna changes it). RDB storages keep
    Optuna's own heartbeat table (database clock); the journal storage has none, so it stores the time as
    a system attribute of the trial.
    """
    storage = study._storage  # an RDBStorage arrives wrapped in Optuna's cache, which forwards heartbeats
    if isinstance(storage, optuna.storages.JournalStorage):
        storage.set_trial_system_attr(trial._trial_id, _HEARTBEAT_ATTR, time.time())
    else:
        storage.record_heartbeat(trial._trial_id)


def _stale_trial_ids(study: optuna.Study, grace_s: float) -> list[int]:
    storage = study._storage
    if not isinstance(storage, optuna.storages.JournalStorage):
        return storage._get_stale_trial_ids(study._study_id)
    now, stale = time.time(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        last = t.system_attrs.get(_HEARTBEAT_ATTR)
        if last is None and t.datetime_start is not None:
            last = t.datetime_start.timestamp()
        if last is not None and now - float(last) > grace_s:
            stale.append(t._trial_id)
    return stale


@contextlib.contextmanager
def heartbeat_thread(study: optuna.Study, trial: optuna.Trial, every_s: float) -> Iterator[None]:
    """Beat for ``trial`` now and every ``every_s`` seconds from a background thread, until the block ends.

    Beats at evaluations alone left a trial with long evaluation intervals looking dead; a thread does not
    depend on the training loop. A failed beat (a database hiccup) is retried at the next interval.
    """
    record_heartbeat(study, trial)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            with contextlib.suppress(Exception):
                record_heartbeat(study, trial)

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fail_dead_trials(study: optuna.Study, url: str, grace_s: float) -> list[FrozenTrial]:
    """Fail the running trials whose worker stopped beating ``grace_s`` ago; retry each once.

    Done under ``storage_lock`` so that two live workers never fail (and retry) the same trial twice. The
    retry is enqueued with the same parameters through Optuna's ``RetryFailedTrialCallback`` (system
    attribute ``failed_trial`` = the dead trial's number) and runs before any new sample.

    Returns:
        The trials this call failed (their MLflow runs are to be ended KILLED by the caller).
    """
    reason = f"worker died: no heartbeat for more than {grace_s:g} s"
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
    storage, failed = study._storage, []
    with storage_lock(url):
        for trial_id in _stale_trial_ids(study, grace_s):
            try:
                if storage.get_trial(trial_id).state != TrialState.RUNNING:
                    continue
                storage.set_trial_user_attr(trial_id, "fail_reason", reason)
                if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another process (without our lock: a plain Optuna client) got there first
            trial = storage.get_trial(trial_id)
            # The retry inherits the params and the baseline label, not the outcome of the dead run.
            inherited = copy.deepcopy(trial)
            inherited.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in _OUTCOME_ATTRS}
            retry(study, inherited)
            failed.append(trial)
    return failed
