"""Where a study lives: Optuna storage URLs and passwords, opening a storage, locks, heartbeats, retries.

``study_storage`` opens a study's storage and fails the trials of dead workers, ``urls`` parses and redacts
storage URLs, ``locks`` holds the cross-process locks, ``retry`` and ``resilient`` wait out database blips.
The rest of layersearch imports from here, never from those modules.
"""

from .retry import RetryingProxy, outage_for
from .study_storage import (
    JOURNAL_PREFIX,
    STORAGE_TIMEOUT_S,
    StudyError,
    check_study_name,
    database_url,
    fail_dead_trials,
    heartbeat_thread,
    journal_path,
    load_study,
    open_storage,
    open_study_storage,
    record_heartbeat,
    redact,
    scrub,
    sqlite_path,
    storage_lock,
    storage_url,
    within,
)

__all__ = [
    "JOURNAL_PREFIX",
    "STORAGE_TIMEOUT_S",
    "RetryingProxy",
    "StudyError",
    "check_study_name",
    "database_url",
    "fail_dead_trials",
    "heartbeat_thread",
    "journal_path",
    "load_study",
    "open_storage",
    "open_study_storage",
    "outage_for",
    "record_heartbeat",
    "redact",
    "scrub",
    "sqlite_path",
    "storage_lock",
    "storage_url",
    "within",
]
