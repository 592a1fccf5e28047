"""The summary run of a study's MLflow experiment: the best config(s), the Pareto table, the top row's metrics."""

from __future__ import annotations

import csv
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from ..storage import redact
from .store import MAX_PARAM_CHARS, STORAGE_TAG, SUMMARY_TAG

__all__ = ["write_summary_run"]


def write_summary_run(
    tracker,
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

    for old in tracker._all_runs(f"tags.`{SUMMARY_TAG}` = 'true'"):
        tracker.client.delete_run(old.info.run_id)
    tags = {SUMMARY_TAG: "true", STORAGE_TAG: redact(storage_url)}
    if pareto_table and "trial" in pareto_table[0]:
        tags["layersearch.best_trial"] = str(pareto_table[0]["trial"])
    run_id = tracker._new_run("summary", tags)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if len(best) == 1:
            (out / "best.yaml").write_text(yaml.safe_dump(best[0], sort_keys=False))
        elif best:
            (out / "pareto").mkdir()
            for config in best:
                n = config.get("provenance", {}).get("trial", "x")
                (out / "pareto" / f"trial_{n}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        if pareto_table:
            columns = list(dict.fromkeys(k for row in pareto_table for k in row))
            with open(out / "pareto.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=columns)
                writer.writeheader()
                writer.writerows(pareto_table)
            (out / "pareto.md").write_text(_markdown_table(pareto_table, columns))
        tracker.client.log_artifacts(run_id, tmp)

    ts = int(time.time() * 1000)
    top = pareto_table[0] if pareto_table else {}
    metrics = [
        Metric(str(k), float(v), ts, 0)
        for k, v in top.items()
        if k != "trial" and _is_number(v) and math.isfinite(float(v))
    ]
    params = [Param(str(k), str(v)[:MAX_PARAM_CHARS]) for k, v in (extra_params or {}).items()]
    tracker._log_batch(run_id, metrics=metrics, params=params)
    tracker.client.set_terminated(run_id, "FINISHED")
    return run_id


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _markdown_table(rows: list[dict], columns: list[str]) -> str:
    def cell(v: Any) -> str:
        text = f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"
