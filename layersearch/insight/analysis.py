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

from ..lossnet.layers import LayerError, layer_names
from ..lossnet.weights import weights_label
from ..search.noise import NoiseFloor, compare, is_repeat, noise_floor, runs_of
from ..search.ranking import front
from ..search.storage import StudyError
from ..trial.metric_registry import self_graded_archs

__all__ = [
    "IMPORTANCE_METHOD",
    "Candidate",
    "StudySummary",
    "baseline_differences",
    "derived_params",
    "gram_on_resnet",
    "importances",
    "intermediate",
    "pareto_front",
    "pruned_at",
    "searched_quantities",
    "self_graded",
    "summarize_study",
    "top_trials",
    "trial_arch",
    "trial_costs",
]

GROUPS = (("content", "content_layers", ""), ("style", "style_layers", "style_"))
IMPORTANCE_METHOD = "fANOVA (optuna.importance.FanovaImportanceEvaluator, Hutter et al. 2014)"
#: Fewer complete trials than this and importance is not computed (the top quantile would be one trial).
MIN_TRIALS_FOR_IMPORTANCE = 8


@dataclass(frozen=True)
class Candidate:
    """One searchable layer: a content or style term at ``layer`` of loss network ``arch``."""

    group: str  # "content" | "style"
    arch: str
    layer: str

    @property
    def key(self) -> str:
        return f"{self.group}_layers"


@dataclass
class StudySummary:
    """What the report needs to know about a study, read once from Optuna.

    ``complete`` holds the COMPLETE trials that carry a ``layer_config``, first runs only: a baseline's
    repeats with another seed (``repeats``, see search/noise.py) measure seed noise (``noise``) and are not
    extra configs, so effects, importances, fronts and top tables never see them. ``trials`` holds every
    trial but the repeats. ``objectives`` is ``[(metric, "minimize" | "maximize")]``, primary first.
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
    candidates: list[Candidate] = field(default_factory=list)
    archs: list[str] = field(default_factory=list)
    repeats: list[FrozenTrial] = field(default_factory=list)
    noise: dict[str, NoiseFloor] = field(default_factory=dict)
    lpips: str | None = None  # "alex/imagenet": the LPIPS net and weights, when the sweep recorded them

    @property
    def metrics(self) -> list[str]:
        return [m for m, _ in self.objectives]

    @property
    def baselines(self) -> list[FrozenTrial]:
        return [t for t in self.complete if t.user_attrs.get("baseline")]

    @property
    def is_style(self) -> bool:
        return any(c.group == "style" for c in self.candidates) or "style" in self.task.lower()

    def layers_of(self, group: str) -> list[str]:
        """The candidate layer names of one group, every network together, in candidate order."""
        return list(dict.fromkeys(c.layer for c in self.candidates if c.group == group))


def trial_arch(trial: FrozenTrial) -> str:
    return str(trial.user_attrs["layer_config"].get("loss_net", {}).get("arch", "vgg16"))


def _network_order(arch: str):
    """Sort key by forward order in ``arch`` when lossnet knows its layer table, else by name."""
    try:
        order = {n: i for i, n in enumerate(layer_names(arch))}
    except LayerError:  # a network whose table this version does not have: the space's order decides
        order = {}
    return lambda name: (order.get(name, len(order)), name)


def _archs(space_config: Mapping[str, Any], trials: Sequence[FrozenTrial]) -> list[str]:
    """The networks the space searches (its order), then any other network a trial used."""
    arch = space_config.get("arch")
    listed = [] if arch is None else [arch] if isinstance(arch, str) else list(arch)
    return list(dict.fromkeys([*map(str, listed), *(trial_arch(t) for t in trials)])) or ["vgg16"]


def _candidates(space_config: Mapping[str, Any], archs: Sequence[str], complete: Sequence[FrozenTrial]
                ) -> list[Candidate]:
    """Candidate layers per group and network: the space's list in its order (one list for every network,
    or ``{arch: [...]}``), then any other layer a trial of that network used, in forward order."""
    out = []
    for group, key, _ in GROUPS:
        spec = space_config.get(group) or {}
        raw = spec.get("candidates") if isinstance(spec, Mapping) else None
        for arch in archs:
            listed = list(raw.get(arch) or []) if isinstance(raw, Mapping) else list(raw or [])
            used = {n for t in complete if trial_arch(t) == arch for n in t.user_attrs["layer_config"].get(key, {})}
            extra = sorted(used - set(listed), key=_network_order(arch))
            out += [Candidate(group, arch, name) for name in [*listed, *extra]]
    return out


def summarize_study(study: optuna.Study) -> StudySummary:
    """Read a study's attributes and trials.

    Raises:
        StudyError: the study has no complete trial (nothing to report).
    """
    attrs = study.user_attrs
    everything = study.get_trials(deepcopy=False)
    trials = [t for t in everything if not is_repeat(t)]
    complete = [t for t in trials if t.state == TrialState.COMPLETE and "layer_config" in t.user_attrs]
    if not complete:
        raise StudyError(f"study {study.study_name!r} has no complete trial yet; run `layersearch sweep "
                         f"study.name={study.study_name}` until one completes")
    metrics = list(attrs.get("objectives") or [f"objective_{i}" for i in range(len(study.directions))])
    directions = ["minimize" if d == optuna.study.StudyDirection.MINIMIZE else "maximize" for d in study.directions]
    states = [t.state for t in trials]
    repeats = [t for t in everything if is_repeat(t)]
    counts = {"complete": states.count(TrialState.COMPLETE), "pruned": states.count(TrialState.PRUNED),
              "failed": states.count(TrialState.FAIL), "repeats": len(repeats)}
    loss_weights = sorted({weights_label(t.user_attrs["layer_config"]["loss_net"]["weights"]) for t in complete})
    space_config = dict(attrs.get("search_space_config") or {})
    archs = _archs(space_config, complete)
    return StudySummary(
        name=study.study_name, task=str(attrs.get("task", "unknown")).rsplit(".", 1)[-1],
        search_space=str(attrs.get("search_space", "unknown")), space_config=space_config,
        objectives=list(zip(metrics, directions, strict=True)), trials=trials, complete=complete, counts=counts,
        random_weights=bool(attrs.get("random_weights")) or "random" in loss_weights,
        loss_net_weights=loss_weights, candidates=_candidates(space_config, archs, complete), archs=archs,
        repeats=repeats, noise=noise_floor(everything, metrics), lpips=attrs.get("lpips"),
    )


def trial_costs(summary: StudySummary) -> dict[str, tuple[float | None, int]]:
    """``{arch: (median seconds per complete trial, trials timed)}`` from Optuna's start and end times."""
    out = {}
    for arch in summary.archs:
        seconds = [(t.datetime_complete - t.datetime_start).total_seconds() for t in summary.complete
                   if trial_arch(t) == arch and t.datetime_start and t.datetime_complete]
        out[arch] = (float(np.median(seconds)) if seconds else None, len(seconds))
    return out


def self_graded(summary: StudySummary, lpips: str | None) -> list[str]:
    """The searched loss networks that are the LPIPS backbone too (``lpips`` as ``alex/imagenet``)."""
    return self_graded_archs(summary.archs, str(lpips or "").split("/")[0].strip())


def gram_on_resnet(layer_config: Mapping[str, Any]) -> bool:
    """Gram (style) terms on a ResNet: residual features give poor Gram statistics (Wang, Li & Vasconcelos,
    CVPR 2021), so the report marks such configs."""
    arch = str(layer_config.get("loss_net", {}).get("arch", ""))
    return arch.startswith("resnet") and bool(layer_config.get("style_layers"))


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
    return ranked(front(summary.complete, metric_dirs), 0, metric_dirs[0])


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
    """``trial`` minus every literature baseline of the study, per objective, called against seed noise.

    A config's value is the mean of its runs: its first run and, for a baseline run again with another seed,
    its repeats (``value_runs``/``baseline_runs`` say how many). The verdict is ``search.noise.compare``:
    "better"/"worse" only beyond the study's seed noise, "within noise" otherwise.
    """
    pool = [*summary.complete, *summary.repeats]
    rows = []
    for base in summary.baselines:
        if base.number == trial.number:
            continue
        for i, (metric, direction) in enumerate(summary.objectives):
            mine, theirs = runs_of(trial, pool, i), runs_of(base, pool, i)
            value, base_value = float(np.mean(mine)), float(np.mean(theirs))
            rows.append({"baseline": base.user_attrs["baseline"], "metric": metric, "value": value,
                         "value_runs": len(mine), "baseline_value": base_value, "baseline_runs": len(theirs),
                         "difference": value - base_value, "better_if": better_if(direction),
                         "verdict": compare(mine, theirs, direction, summary.noise.get(metric))})
    return rows


def intermediate(trial: FrozenTrial) -> dict[int, float]:
    """``{step: primary value}`` of every evaluation a trial reported: Optuna's intermediate values (one
    objective) or the user attr ``intermediate`` (several objectives: Optuna refuses ``report`` there)."""
    return dict(trial.intermediate_values) or {int(k): float(v) for k, v in
                                               (trial.user_attrs.get("intermediate") or {}).items()}


def pruned_at(trial: FrozenTrial) -> tuple[int, float] | None:
    """(step, primary value) of the last evaluation a pruned trial reported, or None."""
    values = intermediate(trial)
    if not values:
        return None
    step = max(values)
    return step, float(values[step])


def searched_quantities(layer_config: Mapping[str, Any]) -> dict[str, Any]:
    """A config's searched quantities other than its layers: ``log10_content_style_ratio`` (None without
    Gram terms), ``pixel_weight``, ``tv_weight``, ``criterion``, ``arch``."""
    lc = layer_config
    ratio = None
    if lc.get("style_layers") and lc.get("content_weight") and lc.get("style_weight"):
        ratio = math.log10(lc["content_weight"] / lc["style_weight"])
    return {"log10_content_style_ratio": ratio, "pixel_weight": float(lc.get("pixel_weight", 0.0)),
            "tv_weight": float(lc.get("tv_weight", 0.0)), "criterion": str(lc.get("criterion", "mse")),
            "arch": str(lc.get("loss_net", {}).get("arch", "vgg16"))}


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


def top_trials(summary: StudySummary, n: int) -> list[FrozenTrial]:
    """The ``n`` best complete trials: the Pareto front first (best primary first), then by the primary."""
    front = pareto_front(summary)
    rest = [t for t in ranked(summary.complete, 0, summary.objectives[0][1]) if t not in front]
    return (front + rest)[:n]
