"""Where and under which names a study is recorded in MLflow: its tags, run names, artifact location, and
the checks that a tracking store can be used (before anything is created).

mlflow is imported inside the functions that need it: importing it takes seconds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...errors import LayersearchError
from ..storage import STORAGE_TIMEOUT_S, database_url, redact, sqlite_path, within

__all__ = [
    "TrackingError", "artifact_location_for", "check_tracking", "find_experiment", "is_database_uri",
    "layers_label", "probe_tracking", "trial_run_name",
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
# A token per run creation: a create whose answer was lost is sent again (by MLflow's http client, or by the
# retry of a database store) after the server may have committed it; the token finds the twin to delete.
CREATE_TAG = "layersearch.create"
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


def layers_label(layer_config: Mapping[str, Any], weights: bool = False) -> str:
    """A layer config in one line, the one rule for every output that names one.

    Short (MLflow run names, confirm rows): the layers, ``relu2_2+relu4_3+style:relu1_2+pixel``
    (``style:`` marks Gram layers). With ``weights`` (the report's tables), what the loss was:
    ``relu2_2:1 + relu4_3:0.3, style relu1_2:2, ratio 0.5, pixel:1`` (then ``tv:``, a criterion other than mse).
    """
    if not weights:
        layers = list(layer_config.get("content_layers") or {})
        layers += [f"style:{n}" for n in layer_config.get("style_layers") or {}]
        if float(layer_config.get("pixel_weight") or 0) > 0:
            layers.append("pixel")
        return "+".join(layers) or "no layers"
    parts = [" + ".join(f"{n}:{w:.3g}" for n, w in layer_config.get("content_layers", {}).items())]
    style = layer_config.get("style_layers", {})
    if style:
        parts.append("style " + " + ".join(f"{n}:{w:.3g}" for n, w in style.items()))
        if layer_config.get("content_weight") and layer_config.get("style_weight"):
            parts.append(f"ratio {layer_config['content_weight'] / layer_config['style_weight']:.3g}")
    if layer_config.get("pixel_weight"):
        parts.append(f"pixel:{layer_config['pixel_weight']:.3g}")
    if layer_config.get("tv_weight"):
        parts.append(f"tv:{layer_config['tv_weight']:.3g}")
    if layer_config.get("criterion", "mse") != "mse":
        parts.append(str(layer_config["criterion"]))
    return ", ".join(p for p in parts if p) or "(nothing)"


def trial_run_name(number: int, layer_config: dict | None, baseline: str | None = None,
                   retry_of: int | None = None) -> str:
    """``#12 relu2_2+relu4_3`` (`layers_label`), ``#0 johnson_sr`` for a baseline.

    The runs table then answers "which layers" without opening each run.
    """
    if baseline:
        what = baseline
    elif layer_config:
        what = layers_label(layer_config)
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
