"""Waiting out database blips: transient errors are retried at the edge, for a bounded time.

Managed databases fail over, restart for maintenance and drop idle connections. A storage call that meets a
lost or refused connection is tried again with backoff until ``study.db_retry_s`` (default 120 s) has passed
since the outage began; the user sees one line when it begins and one when it ends. Past the limit the call
raises a one-line `StudyError` naming the store (password redacted): exit status 2.

Only errors that mean "the connection was lost or refused" are retried (`is_transient`); a logic error
(a missing table, a constraint, a finished trial) is raised at once. SQLite has no server to lose, and its
OperationalError also means "no such table", so SQLite errors are never retried.

The budget belongs to the outage, not to the call: every call to one store in this process (threads
included) shares an `Outage`, so a heartbeat thread and the main thread print one line between them, and once
one call has given up the next ones try once instead of waiting another ``db_retry_s`` each.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .urls import StudyError, redact, scrub

__all__ = ["DB_RETRY_S", "Outage", "RetryingProxy", "call", "is_transient", "outage_for", "single_attempt"]

DB_RETRY_S = 120.0  # study.db_retry_s default
FIRST_DELAY_S, MAX_DELAY_S = 0.5, 5.0
# A network file system that hiccups (a journal file on NFS): errors that pass when the server answers again.
FILE_ERRNOS = {errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.ENOLCK, errno.EAGAIN, errno.EBUSY}

T = TypeVar("T")


def _chain(err: BaseException | None):
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _driver_operational(err: BaseException) -> bool:
    """A PostgreSQL driver's OperationalError: connection refused or lost, server shutting down or starting."""
    for module in ("psycopg", "psycopg2"):
        driver = sys.modules.get(module)
        if driver is not None and isinstance(err, driver.OperationalError):
            return True
    return False


def is_transient(err: BaseException) -> bool:
    """True when ``err`` (or what caused it) means the connection to the store was lost or refused.

    Optuna wraps SQLAlchemy errors in ``StorageInternalError`` and MLflow in ``MlflowException``, so the
    whole cause chain is read: SQLAlchemy's DisconnectionError, an error that invalidated its connection, an
    OperationalError of a server database (not SQLite), a driver's OperationalError, or a file-system
    blip (`FILE_ERRNOS`).
    """
    import sqlalchemy.exc as sa

    for e in _chain(err):
        if isinstance(e, sa.DisconnectionError):
            return True
        if isinstance(e, sa.DBAPIError):
            if e.connection_invalidated:
                return True
            if isinstance(e, sa.OperationalError):
                return type(e.orig).__module__.split(".")[0] != "sqlite3"
        if _driver_operational(e):
            return True
        if type(e) is OSError and e.errno in FILE_ERRNOS:  # subclasses (FileNotFoundError...) are logic errors
            return True
    return False


def _say(message: str) -> None:
    from ...progress import write

    write(message, file=sys.stderr)


def _short(err: BaseException, url: str) -> str:
    # The driver's own words (first line), passwords removed: "connection refused", "server closed ...".
    chain = list(_chain(err))
    root = next((e.orig for e in chain if getattr(e, "orig", None) is not None), chain[-1])
    text = " ".join(str(root).split()) or type(root).__name__
    return scrub(text[:160], url)


class Outage:
    """The connection trouble of one store, shared by every call to it in this process."""

    def __init__(self, url: str, retry_s: float):
        self.url, self.retry_s = url, float(retry_s)
        self.since: float | None = None  # time.monotonic() of the first failure of the current outage
        self._lock = threading.Lock()

    def failed(self, err: BaseException) -> float:
        """Note a transient failure; returns the seconds left to retry (<= 0: give up)."""
        with self._lock:
            now = time.monotonic()
            if self.since is None:
                self.since = now
                _say(f"database {redact(self.url)} unreachable ({_short(err, self.url)}); "
                     f"retrying for up to {self.retry_s:g} s")
            return self.since + self.retry_s - now

    def recovered(self) -> None:
        if self.since is None:  # the usual case, without taking the lock
            return
        with self._lock:
            if self.since is not None:
                _say(f"database {redact(self.url)} reachable again after {time.monotonic() - self.since:.0f} s")
                self.since = None

    def give_up(self, err: BaseException) -> StudyError:
        return StudyError(f"database {redact(self.url)} unreachable for more than {self.retry_s:g} s "
                          f"({_short(err, self.url)}); run the same command again once it is back (the study "
                          "resumes where it stopped)")


_OUTAGES: dict[str, Outage] = {}
_GUARD = threading.Lock()


def _key(url: str) -> str:
    # The Optuna storage, its lock connection and MLflow may spell one server's URL with different drivers.
    return re.sub(r"^(postgres|postgresql)(\+\w+)?://", "postgresql://", str(url))


def outage_for(url: str, retry_s: float | None = None) -> Outage:
    """The shared `Outage` of the store at ``url``; ``retry_s`` (when given) sets its budget."""
    with _GUARD:
        outage = _OUTAGES.get(_key(url))
        if outage is None:
            outage = _OUTAGES[_key(url)] = Outage(url, DB_RETRY_S if retry_s is None else retry_s)
        elif retry_s is not None:
            outage.retry_s = float(retry_s)
    return outage


_depth = threading.local()  # only the outermost retrying call of a thread retries (a method calling another)


@contextlib.contextmanager
def single_attempt() -> Iterator[None]:
    """Calls in this block (this thread) are tried once: opening a store fails fast on a wrong URL."""
    previous, _depth.n = getattr(_depth, "n", 0), 1
    try:
        yield
    finally:
        _depth.n = previous


def call(outage: Outage, fn: Callable[[], T], before_retry: Callable[[], None] | None = None) -> T:
    """``fn()``, tried again after transient errors until the outage's budget is spent.

    Args:
        before_retry: run before each new attempt (e.g. take a lost database lock again).

    Raises:
        StudyError: still failing ``outage.retry_s`` after the outage began (one line, password redacted).
    """
    if getattr(_depth, "n", 0):
        return fn()
    _depth.n = 1
    try:
        delay, attempt = FIRST_DELAY_S, 0
        while True:
            try:
                if attempt and before_retry is not None:
                    before_retry()
                result = fn()
            except Exception as err:
                if not is_transient(err):
                    raise
                left = outage.failed(err)
                if left <= 0:
                    raise outage.give_up(err) from None
                time.sleep(min(delay * random.uniform(0.8, 1.2), left))
                delay, attempt = min(2 * delay, MAX_DELAY_S), attempt + 1
                continue
            outage.recovered()
            return result
    finally:
        _depth.n = 0


class RetryingProxy:
    """``target`` with every method call going through `call` (an MLflow client on a database store)."""

    def __init__(self, target: Any, outage: Outage):
        self._target, self._outage = target, outage

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value

        @functools.wraps(value)
        def retried(*args, **kwargs):
            return call(self._outage, lambda: value(*args, **kwargs))

        return retried
