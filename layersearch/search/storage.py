"""Where a study lives: storage URLs, opening them, locks, heartbeats, and hiding their passwords.

The one home of SQLite-path parsing (Optuna's ``sqlite:///<studies_dir>/<name>/optuna.db`` and MLflow's
``sqlite:///<studies_dir>/mlflow.db`` share it), of URL redaction (nothing printed, logged or written by
layersearch shows a storage password), of the locks that make concurrent start-up and trial reservation
safe, and of the heartbeats that let a live worker fail the trials of a dead one.

Storages:
- ``sqlite:///path.db``: the default for one worker; safe for a few processes on one host (writes are
  serialised by SQLite's file lock, start-up by ours).
- ``journal:///path/journal.log``: Optuna's journal file storage, the default for ``study.workers > 1``
  without a server (SQLite is not safe for many concurrent writers).
- ``postgresql://user:password@host/db``: many workers on many machines (needs ``layersearch[postgres]``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import fcntl
import hashlib
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import LayersearchError

__all__ = [
    "GRACE_S",
    "HEARTBEAT_S",
    "STORAGE_TIMEOUT_S",
    "StudyError",
    "check_study_name",
    "database_url",
    "fail_dead_trials",
    "heartbeat_thread",
    "journal_path",
    "load_study",
    "open_storage",
    "record_heartbeat",
    "redact",
    "scrub",
    "sqlite_path",
    "storage_lock",
    "storage_url",
    "within",
]

STORAGE_TIMEOUT_S = 30
HEARTBEAT_S = 30  # study.heartbeat_s default
GRACE_S = 120  # study.grace_s default
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
JOURNAL_PREFIX = "journal:///"
_OUTCOME_ATTRS = ("fail_reason", "intermediate")
_HEARTBEAT_ATTR = "layersearch:heartbeat"  # journal storages: the time of the last beat (seconds since epoch)

T = TypeVar("T")


class StudyError(LayersearchError, ValueError):
    """A study that cannot be run or read: bad sampler, objective, storage; the message is one line."""


_SECRET_QUERY = re.compile(
    r"([?&;](?:password|passwd|pwd|secret|token|access_token|api_key|apikey)=)[^&;#]*", re.IGNORECASE
)


def redact(url: str) -> str:
    """Hide passwords in a storage or tracking URL, for printing and logging.

    `postgresql://user:secret@host/db` -> `postgresql://user:***@host/db`; query parameters such as
    `?password=...` become `?password=***`. URLs and paths without credentials come back unchanged.
    """
    url = str(url)
    scheme, sep, rest = url.partition("://")
    if sep:
        # The authority ends at the first '/', '?' or '#'; within it, the host follows the LAST '@'
        # (the same rule urllib uses), so an unescaped '@' in a password is still hidden.
        end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        authority, tail = rest[:end], rest[end:]
        userinfo, at, hostport = authority.rpartition("@")
        if at and ":" in userinfo:
            user = userinfo.partition(":")[0]
            authority = f"{user}:***@{hostport}"
        url = f"{scheme}://{authority}{tail}"
    return _SECRET_QUERY.sub(r"\1***", url)


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def scrub(text: str, *urls: str) -> str:
    """``text`` with the passwords of ``urls`` (and any URL-shaped credentials) replaced by ``***``.

    For text that did not come from us (driver errors, worker output): a URL inside it is redacted, and
    the bare password is removed too in case the driver quoted it on its own.
    """
    for url in urls:
        secret = _password(str(url))
        if secret:
            text = text.replace(secret, "***")
        for match in _SECRET_QUERY.finditer(str(url)):
            value = str(url)[match.end():].split("&")[0].split(";")[0].split("#")[0]
            if value:
                text = text.replace(value, "***")
    return re.sub(r"\b[a-z][a-z0-9+.-]*://[^\s'\"]+", lambda m: redact(m.group(0)), text)


def check_study_name(name: Any) -> str:
    """``name`` if it is a safe study name (it becomes a folder and an experiment name), else a StudyError."""
    name = "" if name is None else str(name)
    if not STUDY_NAME.fullmatch(name):
        raise StudyError(
            f"study.name {name!r} is not allowed: use 1-100 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return name


def sqlite_path(url: str) -> Path | None:
    """The database file of a `sqlite:///...` URL (relative to the cwd when relative), else None."""
    if not str(url).startswith("sqlite:///"):
        return None
    path = str(url)[len("sqlite:///"):].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def journal_path(url: str) -> Path | None:
    """The log file of a `journal:///path` URL (our name for Optuna's journal file storage), else None."""
    if not str(url).startswith(JOURNAL_PREFIX):
        return None
    return Path(str(url)[len(JOURNAL_PREFIX):]) if len(str(url)) > len(JOURNAL_PREFIX) else None


def storage_url(study_cfg: Mapping[str, Any], studies_dir: str | Path) -> str:
    """``study.storage``, or the study's default file under ``<studies_dir>/<name>/``.

    The default is ``optuna.db`` (SQLite) for one worker and ``journal.log`` (Optuna's journal file
    storage, safe for concurrent writers) when ``study.workers > 1``; a study keeps the kind it was created
    with, so readers (export, report) and later sweeps find it whatever ``workers`` says.
    """
    name = check_study_name(study_cfg.get("name"))
    if study_cfg.get("storage"):
        return str(study_cfg["storage"])
    folder = Path(studies_dir) / name
    sqlite, journal = folder / "optuna.db", folder / "journal.log"
    if journal.exists() or (not sqlite.exists() and int(study_cfg.get("workers") or 1) > 1):
        return f"{JOURNAL_PREFIX}{journal}"
    return f"sqlite:///{sqlite}"


def database_url(url: str) -> str:
    """A SQLAlchemy URL with a driver that is installed: ``postgresql://`` -> ``postgresql+psycopg://``.

    SQLAlchemy's plain ``postgresql://`` means psycopg2; layersearch's extra installs psycopg 3.

    Raises:
        StudyError: a PostgreSQL URL and no driver installed (says which extra to install).
    """
    url = str(url)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        return url
    try:
        import psycopg  # noqa: F401
    except ImportError:
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            raise StudyError(
                f"{redact(url)} needs a PostgreSQL driver: pip install 'layersearch[postgres]'"
            ) from None
        return f"postgresql://{rest}"
    return f"postgresql+psycopg://{rest}"


def within(seconds: float, fn: Callable[[], T], what: str, url: str, error: type[Exception] = StudyError) -> T:
    """``fn()``, or ``error`` in one line (password removed) if it raises or takes longer than ``seconds``."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(fn)
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


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_PG_LOCKS: dict[str, Any] = {}  # one lock connection per database per process
_PG_GUARD = threading.Lock()


@contextlib.contextmanager
def _pg_lock(url: str) -> Iterator[None]:
    import psycopg

    conninfo = re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)
    with _PG_GUARD:
        conn = _PG_LOCKS.get(conninfo)
        if conn is None or conn.closed:
            conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=STORAGE_TIMEOUT_S)
            _PG_LOCKS[conninfo] = conn
        # A session-level advisory lock: held by this connection until unlocked, seen by every client of
        # the database, on any machine.
        key = int.from_bytes(hashlib.sha1(b"layersearch").digest()[:8], "big", signed=True)
        conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def storage_lock(url: str) -> contextlib.AbstractContextManager[None]:
    """An exclusive lock shared by every process that uses the store at ``url``.

    Held while creating schemas (Optuna's and MLflow's tables: two processes creating them at once fail on
    ``alembic_version``), creating the study, enqueueing baselines, reserving a trial and failing dead ones.
    SQLite and journal files: ``fcntl.flock`` on a file beside them (one host, or a file system with
    working locks). PostgreSQL: an advisory lock. Other databases: no lock (reservation is then
    approximate; documented).
    """
    for path in (sqlite_path(url), journal_path(url)):
        if path is not None:
            return _file_lock(path.with_name(path.name + ".layersearch-lock"))
    if re.match(r"^postgres(ql)?(\+psycopg)?://", str(url)):
        return _pg_lock(url)
    return contextlib.nullcontext()


def open_storage(
    url: str, create: bool = True, heartbeat_s: float = HEARTBEAT_S, grace_s: float = GRACE_S
) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``, reached within STORAGE_TIMEOUT_S or a StudyError (password redacted).

    Args:
        url: ``sqlite:///...``, ``journal:///...``, ``postgresql://...`` or any SQLAlchemy URL.
        create: False to refuse a missing SQLite/journal file instead of creating it (readers).
        heartbeat_s: how often a running trial's worker beats (the storage's heartbeat interval).
        grace_s: a running trial without a beat for this long belongs to a dead worker.
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
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        # The open-lock (O_EXCL file) works where symlinks do not; both are Optuna's own.
        return within(STORAGE_TIMEOUT_S, lambda: optuna.storages.JournalStorage(
            JournalFileBackend(str(journal), lock_obj=JournalFileOpenLock(str(journal)))
        ), "study storage", url)
    db_url = database_url(url)
    engine_kwargs = {"connect_args": {"timeout": 60}} if sqlite_path(url) else {}
    if db_url.startswith("postgresql"):
        engine_kwargs = {"connect_args": {"connect_timeout": STORAGE_TIMEOUT_S}}

    def connect() -> optuna.storages.BaseStorage:
        # Only a writer may be creating the schema; a reader of an existing store takes no lock (and leaves
        # no lock file behind).
        with storage_lock(url) if create else contextlib.nullcontext():
            return optuna.storages.RDBStorage(
                db_url, engine_kwargs=engine_kwargs,
                heartbeat_interval=max(1, round(heartbeat_s)), grace_period=max(1, round(grace_s)),
            )

    return within(STORAGE_TIMEOUT_S, connect, "study storage", url)


def load_study(study_cfg: Mapping[str, Any], studies_dir: str | Path) -> tuple[optuna.Study, str]:
    """An existing study ``study_cfg['name']`` and its storage URL, or a StudyError naming what is there."""
    url = storage_url(study_cfg, studies_dir)
    name = str(study_cfg["name"])
    storage = open_storage(url, create=False)
    names = optuna.study.get_all_study_names(storage)
    if name not in names:
        raise StudyError(f"no study named {name!r} in {redact(url)}" + (f"; studies there: {', '.join(names)}" if names else ""))
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
