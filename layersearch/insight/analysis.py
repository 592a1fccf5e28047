"""The answer drawn from a finished study: which layers matter, by how much, and how sure we are.

Plain data and statistics only; ``layout`` turns them into HTML/Markdown and ``figures`` into PNGs. Everything
here reads the Optuna study (the source of truth). Layer use is read from each trial's ``layer_config``
user attribute, never from ``use_*`` params, which are asked conditionally (see search/space.py).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from ..lossnet.layers import layer_names
from ..lossnet.weights import weights_label
from ..search.storage import StudyError

__all__ = [
    "IMPORTANCE_METHOD",
    "LayerEffect",
    "StudySummary",
    "baseline_differences",
    "derived_params",
    "importances",
    "layer_effects",
    "pareto_front",
    "pruned_at",
    "summarize_study",
    "top_trials",
]

GROUPS = (("content", "content_layers", ""), ("style", "style_layers", "style_"))
IMPORTANCE_METHOD = "fANOVA (optuna.importance.FanovaImportanceEvaluator, Hutter et al. 2014)"
#: Fewer complete trials than this and importance is not computed (the top quantile would be one trial).
MIN_TRIALS_FOR_IMPORTANCE = 8


@dataclass
class StudySummary:
    """What the report needs to know about a study, read once from Optuna.

    ``complete`` holds the COMPLETE trials that carry a ``layer_config``; ``objectives`` is
    ``[(metric, "minimize" | "maximize")]`` with the primary objective first.
    """

    name: str
    task: str
    search_space: str
    space_config: dict[str, Any]
    objectives: list[tuple[str, str]]
    trials: list[FrozenTrial]
    complete: list[FrozenTrial]
    counts: dict[str, int]
    random_weights: bool
    loss_net_weights: list[str]
    candidates: dict[str, list[str]] = field(default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        return [m for m, _ in self.objectives]

    @property
    def baselines(self) -> list[FrozenTrial]:
        return [t for t in self.complete if t.user_attrs.get("baseline")]

    @property
    def is_style(self) -> bool:
        return bool(self.candidates.get("style")) or "style" in self.task.lower()


def _candidates(space_config: Mapping[str, Any], complete: Sequence[FrozenTrial]) -> dict[str, list[str]]:
    """Candidate layers per group: the space's list (first architecture), else every layer any trial used."""
    out: dict[str, list[str]] = {}
    arch = space_config.get("arch", "vgg16")
    arch = arch if isinstance(arch, str) else list(arch)[0]
    for group, key, _ in GROUPS:
        spec = space_config.get(group) or {}
        raw = spec.get("candidates") if isinstance(spec, Mapping) else None
        if isinstance(raw, Mapping):
            raw = [name for names in raw.values() for name in names]
        used = {name for t in complete for name in t.user_attrs["layer_config"].get(key, {})}
        names = list(dict.fromkeys([*(raw or []), *sorted(used)]))
        if names:
            order = {n: i for i, n in enumerate(layer_names(arch))}
            out[group] = sorted(names, key=lambda n: (order.get(n, 999), n))
    return out


def summarize_study(study: optuna.Study) -> StudySummary:
    """Read a study's attributes and trials.

    Raises:
        StudyError: the study has no complete trial (nothing to report).
    """
    attrs = study.user_attrs
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and "layer_config" in t.user_attrs]
    if not complete:
        raise StudyError(f"study {study.study_name!r} has no complete trial yet; run `layersearch sweep "
                         f"study.name={study.study_name}` until one completes")
    metrics = list(attrs.get("objectives") or [f"objective_{i}" for i in range(len(study.directions))])
    directions = ["minimize" if d == optuna.study.StudyDirection.MINIMIZE else "maximize" for d in study.directions]
    states = [t.state for t in trials]
    counts = {"complete": states.count(TrialState.COMPLETE), "pruned": states.count(TrialState.PRUNED),
              "failed": states.count(TrialState.FAIL)}
    loss_weights = sorted({weights_label(t.user_attrs["layer_config"]["loss_net"]["weights"]) for t in complete})
    space_config = dict(attrs.get("search_space_config") or {})
    return StudySummary(
        name=study.study_name, task=str(attrs.get("task", "unknown")).rsplit(".", 1)[-1],
        search_space=str(attrs.get("search_space", "unknown")), space_config=space_config,
        objectives=list(zip(metrics, directions, strict=True)), trials=trials, complete=complete, counts=counts,
        random_weights=bool(attrs.get("random_weights")) or "random" in loss_weights,
        loss_net_weights=loss_weights, candidates=_candidates(space_config, complete),
    )


def is_better(a: float, b: float, direction: str) -> bool:
    return a < b if direction == "minimize" else a > b


def better_if(direction: str) -> str:
    return "lower" if direction == "minimize" else "higher"


def ranked(trials: Sequence[FrozenTrial], index: int, direction: str) -> list[FrozenTrial]:
    """Trials best first by objective ``index``."""
    return sorted(trials, key=lambda t: t.values[index], reverse=direction == "maximize")


def pareto_front(summary: StudySummary) -> list[FrozenTrial]:
    """The best trial (one objective) or the non-dominated complete trials, best first on the primary."""
    metric_dirs = [d for _, d in summary.objectives]
    if len(metric_dirs) == 1:
        return ranked(summary.complete, 0, metric_dirs[0])[:1]
    front = []
    for t in summary.complete:
        dominated = any(
            all(not is_better(t.values[i], o.values[i], d) for i, d in enumerate(metric_dirs))
            and any(is_better(o.values[i], t.values[i], d) for i, d in enumerate(metric_dirs))
            for o in summary.complete
        )
        if not dominated:
            front.append(t)
    return ranked(front, 0, metric_dirs[0])


def layers_label(layer_config: Mapping[str, Any]) -> str:
    """``relu2_2:1.0 + relu4_3:0.3 (style relu1_2:2.0) pixel:1`` - what a trial's loss was, in one line."""
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


def trial_name(trial: FrozenTrial) -> str:
    baseline = trial.user_attrs.get("baseline")
    return f"#{trial.number}" + (f" ({baseline})" if baseline else "")


def baseline_differences(summary: StudySummary, trial: FrozenTrial) -> list[dict[str, Any]]:
    """``trial`` minus every literature baseline of the study, per objective, with the sign that is better."""
    rows = []
    for base in summary.baselines:
        if base.number == trial.number:
            continue
        for i, (metric, direction) in enumerate(summary.objectives):
            diff = trial.values[i] - base.values[i]
            rows.append({"baseline": base.user_attrs["baseline"], "metric": metric, "difference": diff,
                         "better_if": better_if(direction),
                         "verdict": "better" if is_better(trial.values[i], base.values[i], direction)
                         else ("equal" if diff == 0 else "worse")})
    return rows


def pruned_at(trial: FrozenTrial) -> tuple[int, float] | None:
    """(step, primary value) of the last evaluation a pruned trial reported, or None."""
    values = dict(trial.intermediate_values) or {int(k): float(v) for k, v in
                                                 (trial.user_attrs.get("intermediate") or {}).items()}
    if not values:
        return None
    step = max(values)
    return step, float(values[step])


@dataclass
class LayerEffect:
    """Trials that used one candidate layer vs those that did not, on the primary objective.

    ``difference`` = median(with) - median(without); ``ci_low``/``ci_high`` its bootstrap 90% interval
    (None with fewer than 2 trials on a side); ``top_weight`` the median weight of the layer among the top
    decile of trials that used it (None when none of them did).
    """

    group: str
    layer: str
    n_with: int
    n_without: int
    median_with: float | None
    median_without: float | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    better_if: str
    top_uses: int
    top_size: int
    top_weight: float | None

    @property
    def excludes_zero(self) -> bool:
        return self.ci_low is not None and (self.ci_low > 0 or self.ci_high < 0)

    @property
    def helps(self) -> bool | None:
        """True when using the layer moves the primary objective the better way (interval excluding 0)."""
        if not self.excludes_zero:
            return None
        return (self.difference < 0) == (self.better_if == "lower")


def _bootstrap_median_difference(a: np.ndarray, b: np.ndarray, n_boot: int, rng: np.random.Generator
                                 ) -> tuple[float, float]:
    boot_a = np.median(a[rng.integers(0, len(a), size=(n_boot, len(a)))], axis=1)
    boot_b = np.median(b[rng.integers(0, len(b), size=(n_boot, len(b)))], axis=1)
    low, high = np.percentile(boot_a - boot_b, [5.0, 95.0])
    return float(low), float(high)


def layer_effects(summary: StudySummary, n_boot: int = 2000, seed: int = 0) -> list[LayerEffect]:
    """The per-layer effect table, largest absolute difference first (the layers that matter most on top).

    Args:
        summary: the study; its ``complete`` trials' ``layer_config`` says which layers each trial used.
        n_boot: bootstrap resamples for the 90% interval of the difference of medians.
        seed: seeds the bootstrap, so the same study gives the same report.
    """
    metric_direction = summary.objectives[0][1]
    values = np.array([t.values[0] for t in summary.complete], dtype=float)
    top = ranked(summary.complete, 0, metric_direction)[: max(1, math.ceil(0.1 * len(summary.complete)))]
    rows = []
    for g_index, (group, key, _) in enumerate(GROUPS):
        for index, layer in enumerate(summary.candidates.get(group, [])):
            used = np.array([layer in t.user_attrs["layer_config"].get(key, {}) for t in summary.complete])
            a, b = values[used], values[~used]
            median_a = float(np.median(a)) if len(a) else None
            median_b = float(np.median(b)) if len(b) else None
            diff = median_a - median_b if len(a) and len(b) else None
            low = high = None
            if len(a) >= 2 and len(b) >= 2:
                # One generator per layer, seeded by its place: adding a layer leaves the others' intervals.
                rng = np.random.default_rng([seed, g_index, index])
                low, high = _bootstrap_median_difference(a, b, n_boot, rng)
            top_weights = [t.user_attrs["layer_config"][key][layer] for t in top
                           if layer in t.user_attrs["layer_config"].get(key, {})]
            rows.append(LayerEffect(group, layer, int(used.sum()), int((~used).sum()), median_a, median_b, diff,
                                    low, high, better_if(metric_direction), len(top_weights), len(top),
                                    float(np.median(top_weights)) if top_weights else None))
    return sorted(rows, key=lambda r: -abs(r.difference) if r.difference is not None else math.inf)


def derived_params(summary: StudySummary) -> list[dict[str, Any]]:
    """Every complete trial's searched quantities as complete (never missing) parameters.

    ``use_<layer>`` / ``use_style_<layer>`` (0/1), ``log10_w_<layer>`` (one decade below the smallest weight
    seen when the layer is absent), ``log10_content_style_ratio``, ``pixel_weight``, ``tv_weight``,
    ``criterion``, ``arch``. Quantities that never vary are left out: they cannot explain anything.
    """
    rows: list[dict[str, Any]] = []
    for t in summary.complete:
        lc = t.user_attrs["layer_config"]
        row: dict[str, Any] = {}
        for group, key, prefix in GROUPS:
            for layer in summary.candidates.get(group, []):
                weight = lc.get(key, {}).get(layer)
                row[f"use_{prefix}{layer}"] = int(weight is not None)
                row[f"log10_w_{prefix}{layer}"] = math.log10(weight) if weight else None
        if lc.get("style_layers") and lc.get("content_weight") and lc.get("style_weight"):
            row["log10_content_style_ratio"] = math.log10(lc["content_weight"] / lc["style_weight"])
        row["pixel_weight"] = float(lc.get("pixel_weight", 0.0))
        row["tv_weight"] = float(lc.get("tv_weight", 0.0))
        row["criterion"] = str(lc.get("criterion", "mse"))
        row["arch"] = str(lc.get("loss_net", {}).get("arch", "vgg16"))
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


def top_trials(summary: StudySummary, n: int) -> list[FrozenTrial]:
    """The ``n`` best complete trials: the Pareto front first (best primary first), then by the primary."""
    front = pareto_front(summary)
    rest = [t for t in ranked(summary.complete, 0, summary.objectives[0][1]) if t not in front]
    return (front + rest)[:n]
