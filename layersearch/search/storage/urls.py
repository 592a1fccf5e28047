"""Storage URLs: which file or server a study lives in, and hiding their passwords.

The one home of SQLite-path parsing (Optuna's ``sqlite:///<studies_dir>/<name>/optuna.db`` and MLflow's
``sqlite:///<studies_dir>/mlflow.db`` share it) and of URL redaction: nothing printed, logged or written by
layersearch shows a storage password.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ...errors import LayersearchError
from ...settings import StudySettings

__all__ = [
    "JOURNAL_PREFIX",
    "StudyError",
    "check_study_name",
    "database_url",
    "journal_path",
    "redact",
    "scrub",
    "sqlite_path",
    "storage_url",
]

STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
JOURNAL_PREFIX = "journal:///"


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


def storage_url(study: StudySettings, studies_dir: str | Path) -> str:
    """``study.storage``, or the study's default file under ``<studies_dir>/<name>/``.

    The default is ``optuna.db`` (SQLite) for one worker and ``journal.log`` (Optuna's journal file
    storage, safe for concurrent writers) when ``study.workers > 1``; a study keeps the kind it was created
    with, so readers (export, report) and later sweeps find it whatever ``workers`` says.
    """
    name = check_study_name(study.name)
    if study.storage:
        return study.storage
    folder = Path(studies_dir) / name
    sqlite, journal = folder / "optuna.db", folder / "journal.log"
    if journal.exists() or (not sqlite.exists() and study.workers > 1):
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
