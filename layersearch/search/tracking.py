"""MLflow records of a study: one experiment per study, one run per trial, one summary run.

mlflow is imported inside the functions that need it: importing it takes seconds, and `ui_url`
and `ui_command` are used by code paths (and tests) that never touch a tracking store.
"""

from __future__ import annotations

import csv
import functools
import logging
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import yaml

from ..errors import LayersearchError
from .retry import RetryingProxy, outage_for
from .storage import STORAGE_TIMEOUT_S, database_url, redact, scrub, sqlite_path, storage_lock, within

__all__ = [
    "UI_ENV",
    "StudyTracker",
    "TrackingError",
    "artifact_location_for",
    "check_port",
    "check_tracking",
    "probe_tracking",
    "trial_run_name",
    "find_experiment",
    "run_ui",
    "ui_command",
    "ui_url",
]


class TrackingError(LayersearchError, ValueError):
    """A tracking store or dashboard setting that cannot be used (a taken port); one line."""


# Marks the experiment as classic model training. Seen in headless Chromium with MLflow 3.17: the tag alone
# does NOT stop `#/experiments/<id>` opening the GenAI overview ("No data"); `ui_url`'s workflowType does.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
STORAGE_TAG = "layersearch.optuna_storage"
TRIAL_TAG = "layersearch.trial"
STATE_TAG = "layersearch.state"
BACKFILL_TAG = "layersearch.backfilled"
RETRY_TAG = "layersearch.retry_of"
#: MLflow run status of each Optuna state (issue: pruned and failed runs say so in the runs table).
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
#: Fail reasons that mean the trial was stopped from outside, not failed by itself: its run is KILLED.
KILLED_REASONS = ("interrupted", "worker died")
REASON_TAG = "layersearch.reason"
SUMMARY_TAG = "layersearch.summary"
NONFINITE_TAG = "layersearch.nonfinite"
RANDOM_WEIGHTS_TAG = "layersearch.random_weights"
# bf16 or fp32: what trainer.precision=auto resolved to on the machine that ran the trial.
PRECISION_TAG = "layersearch.precision"
NOTE_TAG = "mlflow.note.content"  # shown as the description on MLflow's experiment and run pages
RANDOM_NOTE = "Loss network with RANDOM weights: a pipeline check, not a real result."

# Environment for the UI server. MLflow 3.17's server otherwise starts a job runner with seven huey
# consumer processes (GenAI judges, prompt optimisation, trace jobs) that a runs dashboard never uses; on a
# 2-core machine they roughly double the time until the page answers (~12-17 s -> ~32 s, measured here).
UI_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}

MAX_PARAM_CHARS = 6000  # MLflow rejects longer param values
_BATCH = 100  # MLflow's per-call limit for params and for tags in log_batch

def artifact_location_for(uri: str, study_name: str, artifacts: str | None = None) -> str | None:
    """Where a study's run artifacts go.

    - ``artifacts`` (``tracking.artifacts``) given: ``<artifacts>/<study>`` (a local folder becomes an
      absolute file: URI; any MLflow artifact URI such as ``s3://bucket/x`` is used as written).
    - a sqlite store: ``<db folder>/mlartifacts/<study>``. MLflow would otherwise put artifacts under
      ``./mlruns`` of whatever directory the sweep ran in, where a UI started elsewhere cannot see them.
    - other stores: None (MLflow's default; an http server decides itself). A database store without
      ``tracking.artifacts`` is refused by `StudyTracker` rather than silently writing to ./mlruns.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", study_name) or "study"
    if artifacts:
        artifacts = str(artifacts)
        if "://" in artifacts or artifacts.startswith("file:"):
            return f"{artifacts.rstrip('/')}/{safe}"
        return (Path(artifacts).resolve() / safe).as_uri()
    db = sqlite_path(uri)
    if db is None:
        return None
    return (db.resolve().parent / "mlartifacts" / safe).as_uri()


def is_database_uri(uri: str) -> bool:
    """A tracking URI that MLflow opens as a SQL database (sqlite, postgresql, mysql, mssql)."""
    return re.match(r"^(sqlite|postgres|postgresql|mysql|mssql)(\+\w+)?://", str(uri)) is not None


def check_tracking(uri: str, artifacts: str | None) -> None:
    """Refuse tracking settings that cannot work, before anything is created (TrackingError, one line)."""
    if is_database_uri(uri) and sqlite_path(uri) is None and not artifacts:
        raise TrackingError(f"tracking.uri {redact(uri)} is a database: set tracking.artifacts to a folder "
                            "every worker and the dashboard can read (or an artifact URI such as s3://...)")


def trial_run_name(number: int, layer_config: dict | None, baseline: str | None = None,
                   retry_of: int | None = None) -> str:
    """``#12 relu2_2+relu4_3`` (``style:`` marks Gram layers), ``#0 johnson_sr`` for a baseline.

    The runs table then answers "which layers" without opening each run.
    """
    if baseline:
        what = baseline
    elif layer_config:
        layers = list(layer_config.get("content_layers") or {})
        layers += [f"style:{n}" for n in layer_config.get("style_layers") or {}]
        if float(layer_config.get("pixel_weight") or 0) > 0:
            layers.append("pixel")
        what = "+".join(layers) or "no layers"
    else:
        what = "infeasible"
    return f"#{number} {what}" + (f" (retry of #{retry_of})" if retry_of is not None else "")


def find_experiment(uri: str, study_name: str) -> str | None:
    """The id of the live experiment named `study_name` in the store at `uri`, or None."""
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        return None  # opening a client would create an empty database as a side effect
    import mlflow

    exp = within(STORAGE_TIMEOUT_S, lambda: mlflow.MlflowClient(tracking_uri=database_url(uri)).get_experiment_by_name(
        study_name), "tracking store", uri, TrackingError)
    if exp is None or exp.lifecycle_stage != "active":
        return None
    return exp.experiment_id


def _killed(reason: str | None) -> bool:
    return bool(reason) and str(reason).startswith(KILLED_REASONS)


def _probe_server(uri: str, timeout: float = 10) -> None:
    """Fail fast when an http tracking server does not answer (MLflow's own client retries for minutes)."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # something answers; MLflow will say more if it is not a tracking server
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingError(f"cannot reach tracking server {redact(uri)}: {reason}") from None


def probe_tracking(uri: str) -> None:
    """Check that the tracking store answers, creating no experiment (a TrackingError in one line if not).

    A sweep calls it before building its task and creating anything, so that an unreachable store refuses
    the start with nothing left behind.
    """
    def probe() -> None:
        if re.match(r"^https?://", uri):
            _probe_server(uri)
        elif is_database_uri(uri) and sqlite_path(uri) is None:
            # A plain connection: MLflow's own client would retry a refused one for minutes.
            import sqlalchemy

            engine = sqlalchemy.create_engine(database_url(uri))
            try:
                with engine.connect():
                    pass
            finally:
                engine.dispose()

    within(STORAGE_TIMEOUT_S, probe, "tracking store", uri, TrackingError)


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
        all_tags = {**self.run_tags, **tags}
        if self.random_weights:
            all_tags.setdefault(NOTE_TAG, RANDOM_NOTE)
        return self.client.create_run(self.experiment_id, run_name=name, tags=all_tags).info.run_id

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
    def log_summary(
        self,
        best: list[dict],
        pareto_table: list[dict],
        storage_url: str,
        extra_params: dict | None = None,
    ) -> str:
        """Write the run `summary`: best config(s), the table as CSV and Markdown, top-row metrics.

        A previous summary run of this experiment is deleted, so the dashboard shows one.

        Args:
            best: layer configs, each with `provenance: {trial: <n>, ...}`; one -> `best.yaml`,
                several (a Pareto front) -> `pareto/trial_<n>.yaml`.
            pareto_table: rows with the same keys, best first; its first row's numbers become metrics.
            storage_url: the Optuna storage URL (stored redacted).
            extra_params: logged as params (e.g. sampler, objectives, n_trials).
        """
        from mlflow.entities import Metric, Param

        for old in self._all_runs(f"tags.`{SUMMARY_TAG}` = 'true'"):
            self.client.delete_run(old.info.run_id)
        tags = {SUMMARY_TAG: "true", STORAGE_TAG: redact(storage_url)}
        if pareto_table and "trial" in pareto_table[0]:
            tags["layersearch.best_trial"] = str(pareto_table[0]["trial"])
        run_id = self._new_run("summary", tags)

        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            if len(best) == 1:
                (out / "best.yaml").write_text(yaml.safe_dump(best[0], sort_keys=False))
            elif best:
                (out / "pareto").mkdir()
                for cfg in best:
                    n = cfg.get("provenance", {}).get("trial", "x")
                    (out / "pareto" / f"trial_{n}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
            if pareto_table:
                columns = list(dict.fromkeys(k for row in pareto_table for k in row))
                with open(out / "pareto.csv", "w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=columns)
                    writer.writeheader()
                    writer.writerows(pareto_table)
                (out / "pareto.md").write_text(_markdown_table(pareto_table, columns))
            self.client.log_artifacts(run_id, tmp)

        ts = _now_ms()
        top = pareto_table[0] if pareto_table else {}
        metrics = [
            Metric(str(k), float(v), ts, 0)
            for k, v in top.items()
            if k != "trial" and _is_number(v) and math.isfinite(float(v))
        ]
        params = [Param(str(k), str(v)[:MAX_PARAM_CHARS]) for k, v in (extra_params or {}).items()]
        self._log_batch(run_id, metrics=metrics, params=params)
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

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


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _markdown_table(rows: list[dict], columns: list[str]) -> str:
    def cell(v: Any) -> str:
        text = f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def ui_url(
    port: int, experiment_id: str | None, host: str = "127.0.0.1", *, run_id: str | None = None
) -> str:
    """The dashboard URL: the study's runs table (or one run's page), or the root without an experiment.

    `workflowType=machine_learning` matters: MLflow 3.17's UI otherwise opens in its GenAI mode, where an
    experiment's page is an empty traces overview ("No data") instead of the trials, and a run page is
    filed under "Evaluations".
    """
    root = f"http://{host}:{port}/"
    if experiment_id is None:
        return root
    run = f"/{run_id}" if run_id else ""
    return f"{root}#/experiments/{experiment_id}/runs{run}?workflowType=machine_learning"


def ui_command(uri: str, port: int, host: str = "127.0.0.1") -> list[str]:
    """argv that starts the MLflow UI server over the tracking store at `uri`.

    One worker: the dashboard has one user, and MLflow's default of four uvicorn workers costs seconds
    of start-up and memory on small machines. Artifacts of our experiments carry absolute file: URIs
    (see `artifact_location_for`), which the server reads directly, so no artifact flags are needed for
    the UI to list them and show preview images. Start it with `UI_ENV` in the environment.
    """
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", database_url(uri),
            "--host", host, "--port", str(port), "--workers", "1"]  # fmt: skip


def check_port(port: Any, host: str = "127.0.0.1") -> int:
    """``port`` as a number if it is one, in range and free on ``host``, else a one-line TrackingError."""
    if isinstance(port, bool) or not str(port).isdigit():
        raise TrackingError(f"port must be a whole number, got {port!r}")
    if not 1 <= int(port) <= 65535:
        raise TrackingError(f"port must be between 1 and 65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, int(port)))
        except OSError:
            raise TrackingError(f"port {port} on {host} is already in use; choose another port") from None
    return int(port)


def stop_server(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM (the MLflow server then stops its workers too), SIGKILL if it has not ended in ``timeout``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_ui(uri: str, study_name: str | None, port: int = 5000, open_for_seconds: float | None = None) -> int:
    """Serve the MLflow dashboard for `uri` until Ctrl-C (or `open_for_seconds`); returns an exit code.

    Raises:
        TrackingError: when the port is already in use.
    """
    host = "127.0.0.1"
    port = check_port(port, host)
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    exp_id = find_experiment(uri, study_name) if study_name else None
    print(f"MLflow store: {redact(uri)}")
    if study_name and exp_id is None:
        print(f"study {study_name!r} not found in this store; showing all experiments")
    print(f"Open {ui_url(port, exp_id, host)}   (Ctrl-C stops the server)", flush=True)

    proc = subprocess.Popen(ui_command(uri, port, host), env={**os.environ, **UI_ENV})
    interrupted = False
    try:
        proc.wait(timeout=open_for_seconds)
    except subprocess.TimeoutExpired:
        pass
    except KeyboardInterrupt:
        interrupted = True  # the terminal sent SIGINT to the server too; stop it and wait for it below
    if proc.poll() is None:
        stop_server(proc)
        return 0
    # The server ended on its own: a crash (bad URI, missing driver) keeps its exit code.
    return 0 if interrupted else proc.returncode
