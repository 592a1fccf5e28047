"""Where a study lives: storage URLs, opening them, heartbeats, and hiding their passwords.

The one home of SQLite-path parsing (Optuna's ``sqlite:///<studies_dir>/<name>/optuna.db`` and MLflow's
``sqlite:///<studies_dir>/mlflow.db`` share it) and of URL redaction: nothing printed, logged or written by
layersearch shows a storage password.
"""

from __future__ import annotations

import concurrent.futures
import re
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import optuna

from ..errors import LayersearchError

__all__ = [
    "HEARTBEAT_GRACE_S",
    "STORAGE_TIMEOUT_S",
    "StudyError",
    "beating",
    "load_study",
    "open_storage",
    "record_heartbeat",
    "redact",
    "sqlite_path",
    "storage_url",
]

STORAGE_TIMEOUT_S = 30
HEARTBEAT_GRACE_S = 3600
HEARTBEAT_INTERVAL_S = 60


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


def sqlite_path(url: str) -> Path | None:
    """The database file of a `sqlite:///...` URL (relative to the cwd when relative), else None."""
    if not str(url).startswith("sqlite:///"):
        return None
    path = str(url)[len("sqlite:///"):].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def storage_url(study_cfg: Mapping[str, Any], studies_dir: str | Path) -> str:
    """``study.storage``, or the default SQLite file ``<studies_dir>/<name>/optuna.db``."""
    if study_cfg.get("storage"):
        return str(study_cfg["storage"])
    return f"sqlite:///{Path(studies_dir) / str(study_cfg['name']) / 'optuna.db'}"


def open_storage(url: str, create: bool = True) -> optuna.storages.BaseStorage:
    """An Optuna RDB storage, reached within STORAGE_TIMEOUT_S or a StudyError (password redacted).

    Heartbeats let a later sweep mark trials of a killed process as failed instead of leaving them running.
    """
    path = sqlite_path(url)
    if path is not None:
        if not create and not path.exists():
            raise StudyError(f"no study storage at {path} (run `layersearch sweep` with the same study.name first)")
        path.parent.mkdir(parents=True, exist_ok=True)

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    def connect() -> optuna.storages.BaseStorage:
        # Heartbeats are recorded by the trial runner at every evaluation, so the grace period must exceed
        # the time between two evaluations.
        return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=HEARTBEAT_GRACE_S)

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(connect)
    try:
        return future.result(timeout=STORAGE_TIMEOUT_S)
    except concurrent.futures.TimeoutError:
        raise StudyError(f"cannot reach study storage {redact(url)} within {STORAGE_TIMEOUT_S} s") from None
    except Exception as err:
        message = " ".join(str(err).split())[:300]
        secret = _password(url)
        if secret:
            message = message.replace(secret, "***")
        raise StudyError(f"cannot open study storage {redact(url)}: {message}") from None
    finally:
        pool.shutdown(wait=False)


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
    """Mark ``trial`` alive now, so that ``fail_stale_trials`` fails it only once its process is gone.

    Optuna starts a heartbeat thread only inside ``Study.optimize``; an ask/tell loop has no public way to
    beat, so this is the one place that uses the private storage API (tests/search/test_storage.py fails
    if Optuna changes it).
    """
    study._storage.record_heartbeat(trial._trial_id)


@contextmanager
def beating(study: optuna.Study, trial: optuna.Trial, interval_s: float = HEARTBEAT_INTERVAL_S) -> Iterator[None]:
    """Keep ``trial`` alive from a background thread while the block runs (a beat now, then every ``interval_s``).

    For runs whose evaluations can lie further apart than the grace period (a `confirm` job trains 10x a
    trial): beating only at evaluations would let another process fail a trial that is still working.
    """
    record_heartbeat(study, trial)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval_s):
            try:
                record_heartbeat(study, trial)
            except Exception:  # a missed beat is harmless; the next one or the grace period covers it
                pass

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
