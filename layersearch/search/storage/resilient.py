"""Optuna storages that wait out database blips (`retry.call`), so the sweep code above them stays simple.

`RetryingRDBStorage` is Optuna's RDBStorage (Optuna still wraps it in its cache and finds its heartbeats)
whose database calls are retried on a lost or refused connection. Repeating a call is safe when the first
attempt never reached the database; the hard case is a write whose COMMIT landed but whose answer was lost
with the connection. Each write, reasoned through:

- attributes, parameters, intermediate values, heartbeats: upserts, or inserts whose duplicate Optuna ignores;
  writing them twice leaves the same rows.
- ``create_new_study``: a repeat raises DuplicatedStudyError, which ``create_study(load_if_exists=True)``
  turns into loading the study.
- ``_create_new_trial`` (ask, enqueue, retry of a dead trial): a repeat would add a second trial, RUNNING
  with no heartbeat (never failed as dead) or a second WAITING copy. Each new trial therefore carries a
  unique token (system attribute ``layersearch:create``); after a connection error the trial with our token
  is looked up before creating again, and extra copies (Optuna's own retry loop may also repeat the insert)
  are failed at once with a reason, so they count nowhere.
- ``set_trial_state_values`` finishing a trial (tell): a repeat raises UpdateFinishedTrialError; when the
  stored trial already has the state and values we sent, our commit landed and the call returns True.
- ``set_trial_state_values`` claiming a WAITING trial (RUNNING): a repeat answers False ("someone else took
  it") and we cannot tell whether that someone was us. The trial then gets a heartbeat: if another worker
  runs it, that worker beats on; if it was our lost claim, nobody beats and the trial is failed as dead after
  ``study.grace_s`` and retried once, as for a killed worker. No trial runs twice, none stays RUNNING.

`RetryingJournalBackend` is the journal file's backend with the same waits for a network file system: reads
are repeated whole, and a failed append is cut back to the length the file had under the lock before it is
written again, so a half-written line never stays in the log.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from . import locks, retry

__all__ = ["RetryingJournalBackend", "RetryingRDBStorage"]

TOKEN_ATTR = "layersearch:create"
DUPLICATE_REASON = "duplicate of trial {}: a trial creation repeated after a lost database connection"

# Every RDBStorage method that talks to the database (the private ones are what Optuna's cache calls).
_RETRIED = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_all_studies", "get_trial_user_attrs", "get_trial_system_attrs", "set_trial_param", "_set_trial_param",
    "get_trial_param", "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number", "get_trial_number_from_id", "get_trial", "get_all_trials",
    "_get_trials", "get_n_trials", "get_best_trial", "_get_best_trial_id", "get_trial_params",
    "record_heartbeat", "_get_stale_trial_ids",
)


def _retried(name: str) -> Callable[..., Any]:
    method = getattr(optuna.storages.RDBStorage, name)

    def wrapped(self, *args, **kwargs):
        return self._call(lambda: method(self, *args, **kwargs))

    wrapped.__name__ = wrapped.__qualname__ = name
    wrapped.__doc__ = method.__doc__
    return wrapped


class RetryingRDBStorage(optuna.storages.RDBStorage):
    """``optuna.storages.RDBStorage`` whose calls wait out a lost connection for up to ``retry_s``.

    Args:
        url: the SQLAlchemy URL; ``outage_url``: the URL the user gave (its outage is shared with the lock).
        retry_s: ``study.db_retry_s``.
        kwargs: as for RDBStorage.
    """

    def __init__(self, url: str, *, outage_url: str, retry_s: float, **kwargs: Any):
        super().__init__(url, **kwargs)
        self._outage = retry.outage_for(outage_url, retry_s)
        self._errors = threading.local()
        import sqlalchemy

        # Counts connection errors per thread, Optuna's own internal retries included, so that a write
        # can tell afterwards whether its commit may have landed unseen.
        sqlalchemy.event.listen(self.engine, "handle_error", self._count_error)

    def _count_error(self, context: Any) -> None:
        self._errors.n = self._error_count() + 1

    def _error_count(self) -> int:
        return getattr(self._errors, "n", 0)

    def _call(self, fn: Callable[[], Any]) -> Any:
        return retry.call(self._outage, fn, before_retry=locks.retake_lost_locks)

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        token = uuid.uuid4().hex
        template = _with_token(template_trial, token)
        errors = self._error_count()
        create = super()._create_new_trial

        def attempt() -> FrozenTrial:
            if self._error_count() > errors:  # an earlier attempt may have committed
                mine = self._with_token(study_id, token)
                if mine:
                    return mine[0]
            return create(study_id, template)

        created = self._call(attempt)
        if self._error_count() > errors:
            for extra in self._call(lambda: self._with_token(study_id, token)):
                if extra._trial_id != created._trial_id:
                    self._call(lambda t=extra: self._fail_duplicate(t, created.number))
        return created

    def _with_token(self, study_id: int, token: str) -> list[FrozenTrial]:
        trials = super().get_all_trials(study_id, deepcopy=False)
        return sorted((t for t in trials if t.system_attrs.get(TOKEN_ATTR) == token), key=lambda t: t.number)

    def _fail_duplicate(self, trial: FrozenTrial, original: int) -> None:
        if super().get_trial(trial._trial_id).state.is_finished():
            return
        super().set_trial_user_attr(trial._trial_id, "fail_reason", DUPLICATE_REASON.format(original))
        super().set_trial_state_values(trial._trial_id, TrialState.FAIL)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        errors = self._error_count()
        write = super().set_trial_state_values

        def attempt() -> bool:
            try:
                done = write(trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                if self._error_count() > errors and self._landed(trial_id, state, values):
                    return True
                raise
            if not done and state == TrialState.RUNNING and self._error_count() > errors:
                super(RetryingRDBStorage, self).record_heartbeat(trial_id)  # see the module docstring
            return done

        return self._call(attempt)

    def _landed(self, trial_id: int, state: TrialState, values: Sequence[float] | None) -> bool:
        stored = super().get_trial(trial_id)
        return stored.state == state and (values is None or list(stored.values or []) == [float(v) for v in values])


for _name in _RETRIED:
    if hasattr(optuna.storages.RDBStorage, _name):
        setattr(RetryingRDBStorage, _name, _retried(_name))


def _with_token(template: FrozenTrial | None, token: str) -> FrozenTrial:
    """``template`` (or what Optuna creates without one: a RUNNING trial started now) marked with ``token``."""
    if template is None:
        template = FrozenTrial(number=-1, state=TrialState.RUNNING, value=None, values=None,
                               datetime_start=datetime.datetime.now(), datetime_complete=None, params={},
                               distributions={}, user_attrs={}, system_attrs={}, intermediate_values={},
                               trial_id=-1)
    else:
        template = copy.deepcopy(template)
    template.system_attrs = {**template.system_attrs, TOKEN_ATTR: token}
    return template


class RetryingJournalBackend(JournalFileBackend):
    """Optuna's journal file backend that waits out file-system blips (see the module docstring)."""

    def __init__(self, file_path: str, *, outage_url: str, retry_s: float, **kwargs: Any):
        super().__init__(file_path, **kwargs)
        self._outage = retry.outage_for(outage_url, retry_s)

    def read_logs(self, log_number_from: int):
        read = super().read_logs
        return iter(retry.call(self._outage, lambda: list(read(log_number_from))))

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode("utf-8")
        retry.call(self._outage, lambda: self._append(text))

    def _append(self, text: bytes) -> None:
        self._lock.acquire()
        try:
            size = os.path.getsize(self._file_path) if os.path.exists(self._file_path) else 0
            try:
                with open(self._file_path, "ab") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError:
                # Under the lock nobody else wrote: cut back what we may have half-written, then retry.
                os.truncate(self._file_path, size)
                raise
        finally:
            self._lock.release()
