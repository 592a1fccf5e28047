"""Which searched quantities explain a study's objectives: fANOVA importances over every complete trial's
layers, weights, ratio and network (``derived_params``)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import optuna

from .study_summary import GROUPS, StudySummary, searched_quantities

__all__ = ["IMPORTANCE_METHOD", "derived_params", "importances"]

IMPORTANCE_METHOD = "fANOVA (optuna.importance.FanovaImportanceEvaluator, Hutter et al. 2014)"
#: Fewer complete trials than this and importance is not computed (the top quantile would be one trial).
MIN_TRIALS_FOR_IMPORTANCE = 8


def derived_params(summary: StudySummary) -> list[dict[str, Any]]:
    """Every complete trial's searched quantities as complete (never missing) parameters.

    ``use_<layer>`` / ``use_style_<layer>`` (0/1), ``log10_w_<layer>`` (one decade below the smallest weight
    seen when the layer is absent), ``log10_content_style_ratio``, ``pixel_weight``, ``tv_weight``,
    ``criterion``, ``arch``. Quantities that never vary are left out: they cannot explain anything. With
    several networks a layer name shared by two of them is one column; ``arch`` beside it lets the forest
    split them.
    """
    rows: list[dict[str, Any]] = []
    for t in summary.complete:
        lc = t.user_attrs["layer_config"]
        row: dict[str, Any] = {}
        for group, key, prefix in GROUPS:
            for layer in summary.layers_of(group):
                weight = lc.get(key, {}).get(layer)
                row[f"use_{prefix}{layer}"] = int(weight is not None)
                row[f"log10_w_{prefix}{layer}"] = math.log10(weight) if weight else None
        row.update(searched_quantities(lc))
        rows.append(row)
    names = list(dict.fromkeys(k for row in rows for k in row))
    for name in names:
        seen = [row.get(name) for row in rows if row.get(name) is not None]
        if name.startswith("log10_") and seen:
            absent = min(seen) - 1.0
            for row in rows:
                if row.get(name) is None:
                    row[name] = absent
    keep = [n for n in names if len({row.get(n) for row in rows}) > 1 and all(row.get(n) is not None for row in rows)]
    return [{n: row[n] for n in keep} for row in rows]


def _distribution(values: list[Any]) -> optuna.distributions.BaseDistribution:
    if all(isinstance(v, str) for v in values) or set(values) <= {0, 1}:
        return optuna.distributions.CategoricalDistribution(sorted(set(values)))
    return optuna.distributions.FloatDistribution(float(min(values)), float(max(values)))


def importances(summary: StudySummary, seed: int = 0) -> dict[str, dict[str, float]] | str:
    """``{objective: {derived parameter: importance}}`` (normalised, largest first), or why there is none.

    fANOVA (Hutter et al. 2014, Optuna's ``FanovaImportanceEvaluator``): the share of each objective's
    variance that a random forest fit attributes to each quantity alone. Optuna's evaluators skip a parameter
    missing from any trial and ``use_*`` flags are conditional, so the evaluator runs on a fresh in-memory
    study whose trials carry the complete derived parameters (``derived_params``).
    """
    if len(summary.complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return (f"importance needs at least {MIN_TRIALS_FOR_IMPORTANCE} complete trials; "
                f"this study has {len(summary.complete)}")
    rows = derived_params(summary)
    if not rows or not rows[0]:
        return "no searched quantity varies between the complete trials"
    dists = {name: _distribution([row[name] for row in rows]) for name in rows[0]}
    out = {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for index, (metric, _direction) in enumerate(summary.objectives):
        study = optuna.create_study(direction="minimize")  # variance does not care about the direction
        study.add_trials([
            optuna.trial.create_trial(params=row, distributions=dists, value=t.values[index])
            for row, t in zip(rows, summary.complete, strict=True)
        ])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
            scores = optuna.importance.get_param_importances(study, evaluator=evaluator)
        out[metric] = {k: float(v) for k, v in sorted(scores.items(), key=lambda kv: -kv[1])}
    return out
