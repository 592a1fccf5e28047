"""A finished study read once from Optuna: its trials, candidate layers, seed noise, and what each trial was.

Plain data only; ``best_trials``, ``importance`` and ``effects`` draw the answer from it, ``layout`` turns
that into HTML/Markdown and ``figures`` into PNGs. Everything here reads the Optuna study (the source of
truth). Layer use is read from each trial's ``layer_config``
user attribute, never from ``use_*`` params, which are asked conditionally (see search/loop/space.py).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from ..lossnet.layers import LayerError, layer_names
from ..lossnet.registry import gram_ok
from ..lossnet.weights import weights_label
from ..search.results import NoiseFloor, is_repeat, noise_floor
from ..search.storage import StudyError
from ..trial.metric_registry import self_graded_archs

__all__ = [
    "CandidateLayer",
    "StudySummary",
    "gram_on_resnet",
    "intermediate",
    "pruned_at",
    "searched_quantities",
    "self_graded",
    "summarize_study",
    "trial_arch",
    "trial_costs",
    "trial_name",
]

GROUPS = (("content", "content_layers", ""), ("style", "style_layers", "style_"))


@dataclass(frozen=True)
class CandidateLayer:
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
    repeats with another seed (``repeats``, see search/results/noise.py) measure seed noise (``noise``) and are not
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
    candidates: list[CandidateLayer] = field(default_factory=list)
    archs: list[str] = field(default_factory=list)
    repeats: list[FrozenTrial] = field(default_factory=list)
    noise: dict[str, NoiseFloor] = field(default_factory=dict)
    lpips: str | None = None  # "alex/imagenet": the LPIPS net and weights, when the sweep recorded them
    # {arch: {source, weights, weights_file?, weights_sha256?}}: where each loss network came from (the sweep's record)
    sources: dict[str, dict[str, str]] = field(default_factory=dict)

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
                ) -> list[CandidateLayer]:
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
            out += [CandidateLayer(group, arch, name) for name in [*listed, *extra]]
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
        sources=dict(attrs.get("loss_networks") or {}),
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
    return not gram_ok(arch) and bool(layer_config.get("style_layers"))


def trial_name(trial: FrozenTrial) -> str:
    baseline = trial.user_attrs.get("baseline")
    return f"#{trial.number}" + (f" ({baseline})" if baseline else "")


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
