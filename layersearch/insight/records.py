"""MLflow for the insight commands: links to trial runs, and logging a finished folder to the study's runs.

Optuna is the source of truth and the files on disk are the product; MLflow is where people browse. So
every function here tolerates a missing store, experiment or run, and a failed write is one warning line
(the files are already written when these run).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..search.storage import redact, sqlite_path
from ..search.tracking import (
    NOTE_TAG,
    RANDOM_NOTE,
    RANDOM_WEIGHTS_TAG,
    SUMMARY_TAG,
    TRIAL_TAG,
    find_experiment,
)

__all__ = ["StudyRuns", "log_folder", "trial_runs"]


@dataclass
class StudyRuns:
    """A study's MLflow experiment (None when there is none), its tags, and each trial's newest run id."""

    experiment_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    runs: dict[int, str] = field(default_factory=dict)


def trial_runs(uri: str, study_name: str) -> StudyRuns:
    """The study's experiment and ``{trial number: run id}`` from the run tag ``layersearch.trial``."""
    try:
        exp_id = find_experiment(uri, study_name)
        if exp_id is None:
            return StudyRuns()
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=uri)
        tags = dict(client.get_experiment(exp_id).tags)
        runs, token = [], None
        while True:
            page = client.search_runs([exp_id], f"tags.`{TRIAL_TAG}` != ''", page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                break
    except Exception as err:  # a broken store must not stop a report: it just has no links
        warnings.warn(f"no MLflow links: cannot read {redact(uri)} ({type(err).__name__}: {err})", stacklevel=2)
        return StudyRuns()
    # Oldest first, so that a rerun trial's newest run wins.
    out = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        try:
            out[int(run.data.tags[TRIAL_TAG])] = run.info.run_id
        except (KeyError, ValueError):
            continue
    return StudyRuns(exp_id, tags, out)


def log_folder(uri: str, study_name: str, folder: Path, artifact_path: str, *, run_name: str,
               summary: bool, random_weights: bool) -> str | None:
    """Log ``folder`` to the study's experiment; return the run id, or None (with one warning) on failure.

    Args:
        summary: log into the run tagged ``layersearch.summary=true`` (the sweep's summary run) when there is
            one; otherwise, and when False, into a new run named ``run_name``.
    """
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        warnings.warn(f"no MLflow store at {db}; {folder} is not logged to MLflow", stacklevel=2)
        return None
    try:
        exp_id = find_experiment(uri, study_name)
        if exp_id is None:
            warnings.warn(f"no MLflow experiment {study_name!r} in {redact(uri)}; {folder} is not logged to MLflow",
                          stacklevel=2)
            return None
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=uri)
        found = client.search_runs([exp_id], f"tags.`{SUMMARY_TAG}` = 'true'", max_results=1) if summary else []
        if found:
            run_id = found[0].info.run_id
        else:
            tags = {RANDOM_WEIGHTS_TAG: str(random_weights).lower()}
            if random_weights:
                tags[NOTE_TAG] = RANDOM_NOTE
            run_id = client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
            client.set_terminated(run_id, "FINISHED")
        client.log_artifacts(run_id, str(folder), artifact_path)
        return run_id
    except Exception as err:
        warnings.warn(f"{folder} written but not logged to MLflow ({type(err).__name__}: "
                      f"{' '.join(str(err).split())[:200]})", stacklevel=2)
        return None
