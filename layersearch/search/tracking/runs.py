"""MLflow records of a study: one experiment per study, one run per trial, one summary run.

Names, tags and the store checks are in store.py, the summary run in summary_run.py; the package's
__init__ exports what the rest of layersearch uses. mlflow is imported inside the functions that need it:
importing it takes seconds.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import yaml

from ..storage import (
    STORAGE_TIMEOUT_S,
    RetryingProxy,
    database_url,
    outage_for,
    redact,
    scrub,
    sqlite_path,
    storage_lock,
    within,
)
from .store import (
    _BATCH,
    BACKFILL_TAG,
    CREATE_TAG,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    MAX_PARAM_CHARS,
    NONFINITE_TAG,
    NOTE_TAG,
    RANDOM_NOTE,
    RANDOM_WEIGHTS_TAG,
    REASON_TAG,
    RUN_STATUS,
    STATE_TAG,
    STORAGE_TAG,
    TRIAL_TAG,
    TrackingError,
    _killed,
    _probe_server,
    artifact_location_for,
    check_tracking,
    is_database_uri,
    trial_run_name,
)
from .summary_run import write_summary_run

__all__ = ["StudyTracker"]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _tolerant(method):
    """Run a tracker method; on an MLflow error warn once per tracker and carry on.

    Optuna is the source of truth: a lost MLflow write must never lose a trial or stop a sweep. The next
    sweep's `StudyTracker.backfill` recreates what is missing from Optuna.
    """

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as err:  # MLflow raises many types (MlflowException, OperationalError, HTTP errors)
            self.errors += 1
            if self.errors == 1:
                message = scrub(" ".join(str(err).split())[:200], self.uri)
                warnings.warn(f"MLflow error in {method.__name__} ({type(err).__name__}: {message}); the sweep "
                              "goes on and Optuna keeps every result; the next `layersearch sweep` fills in the "
                              "missing MLflow runs", stacklevel=2)
            return None

    return wrapped


class StudyTracker:
    """Records one Optuna study in MLflow: an experiment, a run per trial, a summary run.

    Args:
        uri: MLflow tracking URI, e.g. `sqlite:///studies/mlflow.db`, `postgresql://...`, `http://...`.
        study_name: the Optuna study name; also the experiment name.
        storage_url: the Optuna storage URL; stored redacted as the tag `layersearch.optuna_storage`.
        tags: experiment tags, copied onto every run, e.g. `{"layersearch.random_weights": "true"}`.
        artifacts: `tracking.artifacts`: where run artifacts go (required with a non-sqlite database store).
        retry_s: a database store's calls wait out a lost connection this long (`study.db_retry_s`; see
            `retry`); past it the call is one tolerated MLflow error. An http server's client retries itself.

    Raises:
        TrackingError: the store cannot be reached within STORAGE_TIMEOUT_S, or a database store without
            `artifacts`; one line, password removed.
    """

    def __init__(self, uri: str, study_name: str, storage_url: str, tags: dict[str, str] | None = None,
                 artifacts: str | None = None, retry_s: float | None = None):
        self.uri = uri
        self.study_name = study_name
        self.errors = 0  # MLflow errors tolerated so far (see _tolerant)
        # Copied onto each run so a random-weights run is labelled even when seen outside its experiment.
        self.run_tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.run_tags[STORAGE_TAG] = redact(storage_url)
        check_tracking(uri, artifacts)
        self.artifact_location = artifact_location_for(uri, study_name, artifacts)
        self.client, self.experiment_id = within(
            STORAGE_TIMEOUT_S, self._connect, "tracking store", uri, TrackingError
        )
        if is_database_uri(uri) and sqlite_path(uri) is None:
            self.client = RetryingProxy(self.client, outage_for(uri, retry_s))
            if not os.environ.get("LAYERSEARCH_DEBUG"):
                # MLflow logs each lost connection with a traceback; the retry says it in one line.
                logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        self.run_id: str | None = None
        self._last_step = 0
        self._nonfinite: list[str] = []

    def _connect(self):
        import mlflow

        db = sqlite_path(self.uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)  # sqlite creates the file, not its folder
        if re.match(r"^https?://", self.uri):
            _probe_server(self.uri)
        exp_tags = {**self.run_tags, EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        if self.random_weights:
            exp_tags[NOTE_TAG] = RANDOM_NOTE
        # The lock makes creating MLflow's schema and the experiment safe when workers start together.
        with storage_lock(self.uri):
            client = mlflow.MlflowClient(tracking_uri=database_url(self.uri))
            exp = client.get_experiment_by_name(self.study_name)
            if exp is None:
                return client, client.create_experiment(
                    self.study_name, artifact_location=self.artifact_location, tags=exp_tags
                )
        if exp.lifecycle_stage != "active":
            # A name stays taken after deletion in MLflow; resuming the study should bring it back.
            client.restore_experiment(exp.experiment_id)
        for k, v in exp_tags.items():
            client.set_experiment_tag(exp.experiment_id, k, v)
        return client, exp.experiment_id

    @property
    def random_weights(self) -> bool:
        return self.run_tags.get(RANDOM_WEIGHTS_TAG, "").lower() == "true"

    def _new_run(self, name: str, tags: dict[str, str]) -> str:
        token = uuid.uuid4().hex
        all_tags = {**self.run_tags, **tags, CREATE_TAG: token}
        if self.random_weights:
            all_tags.setdefault(NOTE_TAG, RANDOM_NOTE)
        run_id = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags).info.run_id
        # A store restarted mid-call may have committed a first attempt whose answer was lost: one run per call.
        for twin in self.client.search_runs([self.experiment_id], f"tags.`{CREATE_TAG}` = '{token}'"):
            if twin.info.run_id != run_id:
                self.client.delete_run(twin.info.run_id)
        return run_id

    def _log_batch(self, run_id: str, metrics=(), params=(), tags=()) -> None:
        # One call in the usual case; chunked only past MLflow's per-call limits.
        metrics, params, tags = list(metrics), list(params), list(tags)
        while metrics or params or tags:
            self.client.log_batch(run_id, metrics=metrics[:1000], params=params[:_BATCH], tags=tags[:_BATCH])
            metrics, params, tags = metrics[1000:], params[_BATCH:], tags[_BATCH:]

    @_tolerant
    def start_trial(
        self, number: int, params: dict[str, Any], layer_config: dict, tags: dict[str, str] | None = None,
        name: str | None = None,
    ) -> str:
        """Open the run `name` (default `trial_run_name`) with its params and `layer_config.yaml`.

        Returns the run id (None after a tolerated MLflow error).
        """
        from mlflow.entities import Param

        self.run_id = None
        run_tags = {TRIAL_TAG: str(number), **{str(k): str(v) for k, v in (tags or {}).items()}}
        self.run_id = self._new_run(name or trial_run_name(number, layer_config), run_tags)
        self._last_step = 0
        self._nonfinite = []
        self._log_batch(
            self.run_id, params=[Param(str(k), str(v)[:MAX_PARAM_CHARS]) for k, v in params.items()]
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "layer_config.yaml"
            path.write_text(yaml.safe_dump(layer_config, sort_keys=False))
            self.client.log_artifact(self.run_id, str(path))
        return self.run_id

    def _current(self) -> str:
        if self.run_id is None:
            raise RuntimeError("no trial run is open: call start_trial first")
        return self.run_id

    @_tolerant
    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Log `metrics` at `step` to the current trial in one call; non-finite values become a tag."""
        from mlflow.entities import Metric, RunTag

        run_id = self._current()
        self._last_step = max(self._last_step, int(step))
        ts = _now_ms()
        good, bad = [], []
        for key, value in metrics.items():
            value = float(value)
            if math.isfinite(value):
                good.append(Metric(key, value, ts, int(step)))
            else:
                bad.append(f"{key}={value}@{step}")
        tags = []
        if bad:
            # MLflow would store NaN/inf, but its charts drop them silently; a tag keeps the fact visible.
            self._nonfinite += bad
            tags.append(RunTag(NONFINITE_TAG, ", ".join(self._nonfinite)[-MAX_PARAM_CHARS:]))
        self._log_batch(run_id, metrics=good, tags=tags)

    @_tolerant
    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Attach a file (e.g. `preview.png`) to the current trial run."""
        self.client.log_artifact(self._current(), str(path), artifact_path)

    @_tolerant
    def log_artifacts(self, folder: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Attach every file of ``folder`` (a trial's folder: preview, logs, traceback) to the current run."""
        self.client.log_artifacts(self._current(), str(folder), artifact_path)

    @_tolerant
    def end_trial(
        self, state: str, values: dict[str, float] | None = None, reason: str | None = None,
        status: str | None = None,
    ) -> None:
        """Close the current trial run with its Optuna state, final values and reason.

        MLflow status: COMPLETE -> FINISHED, PRUNED -> KILLED, FAIL -> FAILED; ``status="KILLED"`` for a
        failed trial that did not fail by itself (interrupted, its worker died). The `layersearch.state` tag
        keeps the Optuna state either way.
        """
        from mlflow.entities import RunTag

        state = state.upper()
        if state not in RUN_STATUS:
            raise ValueError(f"unknown trial state {state!r}; expected COMPLETE, PRUNED or FAIL")
        run_id, self.run_id = self.run_id, None
        if run_id is None:
            return  # its start was lost to an MLflow error; backfill records it later
        tags = [RunTag(STATE_TAG, state)]
        if reason:
            tags.append(RunTag(REASON_TAG, str(reason)[:MAX_PARAM_CHARS]))
        self._log_batch(run_id, tags=tags)
        if values:
            self.run_id = run_id
            try:
                self.log_metrics(self._last_step, values)
            finally:
                self.run_id = None
        self.client.set_terminated(run_id, status or RUN_STATUS[state])

    @_tolerant
    def kill_trial_runs(self, number: int, reason: str) -> int:
        """End the still-running MLflow runs of trial ``number`` as KILLED with ``reason``; returns how many."""
        from mlflow.entities import RunTag

        runs = self._all_runs(f"tags.`{TRIAL_TAG}` = '{int(number)}' and attributes.status = 'RUNNING'")
        for run in runs:
            self._log_batch(run.info.run_id, tags=[RunTag(STATE_TAG, "FAIL"), RunTag(REASON_TAG, reason)])
            self.client.set_terminated(run.info.run_id, "KILLED")
        return len(runs)

    @_tolerant
    def backfill(self, trials: list, objectives: list[str]) -> int:
        """Make MLflow agree with Optuna (the source of truth) for finished ``trials``; returns runs changed.

        A finished trial without a run gets one (params, layer config, final values, state and reason,
        tagged `layersearch.backfilled`); a run still RUNNING for a finished trial is ended with the
        trial's state. Used at the start of every sweep, so MLflow errors and killed workers leave no gap.
        """
        from mlflow.entities import Metric, Param, RunTag

        finished = [t for t in trials if t.state.is_finished()]
        if not finished:
            return 0
        runs: dict[int, list] = {}
        for run in self.trial_runs():
            runs.setdefault(int(run.data.tags[TRIAL_TAG]), []).append(run)
        changed = 0
        for t in finished:
            state = {"COMPLETE": "COMPLETE", "PRUNED": "PRUNED"}.get(t.state.name, "FAIL")
            reason = t.user_attrs.get("fail_reason")
            status = "KILLED" if state == "FAIL" and _killed(reason) else RUN_STATUS[state]
            existing = runs.get(t.number, [])
            for run in existing:
                if run.info.status == "RUNNING":
                    tags = [RunTag(STATE_TAG, state)] + ([RunTag(REASON_TAG, reason)] if reason else [])
                    self._log_batch(run.info.run_id, tags=tags)
                    self.client.set_terminated(run.info.run_id, status)
                    changed += 1
            if existing:
                continue
            tags = {TRIAL_TAG: str(t.number), BACKFILL_TAG: "true", STATE_TAG: state}
            if reason:
                tags[REASON_TAG] = str(reason)[:MAX_PARAM_CHARS]
            if t.user_attrs.get("baseline"):
                tags["layersearch.baseline"] = str(t.user_attrs["baseline"])
            run_id = self._new_run(trial_run_name(t.number, t.user_attrs.get("layer_config"),
                                                  t.user_attrs.get("baseline")), tags)
            metrics = []
            if t.values is not None and state == "COMPLETE":
                metrics = [Metric(n, float(v), _now_ms(), 0) for n, v in zip(objectives, t.values, strict=False)
                           if math.isfinite(float(v))]
            params = [Param(str(k), str(v)[:MAX_PARAM_CHARS]) for k, v in t.params.items()]
            self._log_batch(run_id, metrics=metrics, params=params)
            if t.user_attrs.get("layer_config"):
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "layer_config.yaml"
                    path.write_text(yaml.safe_dump(t.user_attrs["layer_config"], sort_keys=False))
                    self.client.log_artifact(run_id, str(path))
            self.client.set_terminated(run_id, status)
            changed += 1
        return changed

    def trial_runs(self) -> list:
        """Live trial runs of this experiment (not the summary), ordered by trial number."""
        return [r for r in self._all_runs() if TRIAL_TAG in r.data.tags]

    def _all_runs(self, filter_string: str = "") -> list:
        runs, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                break
        return sorted(runs, key=lambda r: int(r.data.tags.get(TRIAL_TAG, -1)))

    @_tolerant
    def log_summary(self, best: list[dict], pareto_table: list[dict], storage_url: str,
                    extra_params: dict | None = None) -> str:
        """Write the run `summary` (see `summary_run.write_summary_run`); returns its run id."""
        return write_summary_run(self, best, pareto_table, storage_url, extra_params)

    def start_run(
        self,
        name: str,
        tags: dict[str, str],
        params: dict[str, Any] | None = None,
        layer_config: dict | None = None,
        replace: bool = False,
    ) -> str:
        """Open a run that is not a sweep trial (a `confirm` job or summary); returns its run id.

        `log_metrics`, `log_artifact` and `end_trial` then act on it as on a trial run. It carries no
        `layersearch.trial` tag, so `trial_runs` leaves it out.

        Args:
            tags: run tags on top of the experiment's, e.g. `{"layersearch.confirm": "true"}`.
            params: logged as params (values cut to MLflow's length limit).
            layer_config: written as the artifact `layer_config.yaml` when given.
            replace: delete earlier live runs of this experiment that carry all of `tags` first, so the
                dashboard shows one (a summary run rewritten by a later command).
        """
        from mlflow.entities import Param

        if replace and tags:
            query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
            for old in self._all_runs(query):
                self.client.delete_run(old.info.run_id)
        self.run_id = self._new_run(name, {str(k): str(v) for k, v in tags.items()})
        self._last_step = 0
        self._nonfinite = []
        self._log_batch(self.run_id, params=[Param(str(k), str(v)[:MAX_PARAM_CHARS]) for k, v in (params or {}).items()])
        if layer_config is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "layer_config.yaml"
                path.write_text(yaml.safe_dump(layer_config, sort_keys=False))
                self.client.log_artifact(self.run_id, str(path))
        return self.run_id
