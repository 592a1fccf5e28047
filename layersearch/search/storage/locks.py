"""The locks that make concurrent start-up and trial reservation safe across processes and machines.

SQLite and journal files: ``fcntl.flock`` on a file beside them (one host, or a file system with working
locks). PostgreSQL: a session-level advisory lock on a connection of its own, which waits out database blips
(`retry.call`): a lost connection releases the lock on the server, so a thread that held it takes it again
(`retake_lost_locks`) before its interrupted storage call is retried, and the critical section stays one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import retry
from .urls import journal_path, sqlite_path

__all__ = ["STORAGE_TIMEOUT_S", "retake_lost_locks", "storage_lock"]

STORAGE_TIMEOUT_S = 30
_KEY = int.from_bytes(hashlib.sha1(b"layersearch").digest()[:8], "big", signed=True)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_PG_CONNS: dict[str, Any] = {}  # one lock connection per database per process
_PG_GUARD = threading.Lock()
_held = threading.local()  # the conninfos of the PostgreSQL locks this thread holds


def _pg_acquire(conninfo: str) -> None:
    import psycopg

    conn = _PG_CONNS.get(conninfo)
    if conn is None or conn.closed or conn.broken:
        conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=STORAGE_TIMEOUT_S)
        _PG_CONNS[conninfo] = conn
    # A session-level advisory lock: held by this connection until unlocked, seen by every client of the
    # database, on any machine.
    conn.execute("SELECT pg_advisory_lock(%s)", (_KEY,))


def _pg_alive(conninfo: str) -> bool:
    conn = _PG_CONNS.get(conninfo)
    if conn is None or conn.closed or conn.broken:
        return False
    try:
        conn.execute("SELECT 1")
        return True
    except Exception:  # noqa: BLE001 - any failure means the session (and its lock) is gone
        return False


def retake_lost_locks() -> None:
    """Take again the PostgreSQL locks this thread held on a connection that has since been lost."""
    for conninfo in getattr(_held, "conninfos", []):
        if not _pg_alive(conninfo):
            _pg_acquire(conninfo)


@contextlib.contextmanager
def _pg_lock(url: str) -> Iterator[None]:
    conninfo = re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)
    # The guard serialises this process's threads: they share one session, and a session's advisory lock
    # does not exclude itself.
    with _PG_GUARD:
        retry.call(retry.outage_for(url), lambda: _pg_acquire(conninfo))
        held = _held.__dict__.setdefault("conninfos", [])
        held.append(conninfo)
        try:
            yield
        finally:
            held.remove(conninfo)
            # A connection lost meanwhile took its lock with it: nothing to release then.
            with contextlib.suppress(Exception):
                _PG_CONNS[conninfo].execute("SELECT pg_advisory_unlock(%s)", (_KEY,))


def storage_lock(url: str) -> contextlib.AbstractContextManager[None]:
    """An exclusive lock shared by every process that uses the store at ``url``.

    Held while creating schemas (Optuna's and MLflow's tables: two processes creating them at once fail on
    ``alembic_version``), creating the study, enqueueing baselines, reserving a trial and failing dead ones.
    Other databases than SQLite, journal files and PostgreSQL: no lock (reservation is then approximate;
    documented).
    """
    for path in (sqlite_path(url), journal_path(url)):
        if path is not None:
            return _file_lock(path.with_name(path.name + ".layersearch-lock"))
    if re.match(r"^postgres(ql)?(\+psycopg)?://", str(url)):
        return _pg_lock(url)
    return contextlib.nullcontext()
