"""The search space: a Hydra config -> ``trial.suggest_*`` calls -> a layer config.

The only module that reads ``search_space``. Optuna parameter names, MLflow parameter names and config
keys are the same strings: ``arch``, ``use_<layer>`` / ``w_<layer>`` (content layers),
``use_style_<layer>`` / ``w_style_<layer>`` (style layers), ``content_style_ratio``, ``pixel_weight``,
``tv_weight``, ``criterion``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...errors import LayersearchError
from ...lossnet.layers import LayerError, check_arch, validate_layers
from ...lossnet.loss import CRITERIA, ConfigError, LossConfig
from ...lossnet.registry import find_network, network_names
from ...lossnet.weights import is_random, weights_for
from ...trial.metric_registry import LPIPS_NETS, lpips_graded, self_graded_archs


class SpaceError(LayersearchError, ValueError):
    """A search space that cannot be searched; the message names the key."""


class NotInSpace(ValueError):
    """A layer config this space cannot produce (``params_for``); the message says why. Not a bug, not input."""


class Infeasible(Exception):
    """The sampled parameters break a constraint (layer count); the trial is failed without training."""


@dataclass(frozen=True)
class Choice:
    """A number, fixed (``fixed``), log-uniform in [low, high], or categorical over ``choices``."""

    fixed: float | None = None
    low: float | None = None
    high: float | None = None
    choices: tuple[float, ...] = ()

    @classmethod
    def parse(cls, value: Any, key: str) -> Choice:
        if value is None:
            return cls(fixed=0.0)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cls(fixed=float(value))
        if isinstance(value, Sequence) and not isinstance(value, str):
            choices = tuple(float(v) for v in value)
            if not choices or any(c < 0 for c in choices):
                raise SpaceError(f"{key}: choices must be a non-empty list of numbers >= 0, got {list(value)}")
            return cls(choices=choices)
        if isinstance(value, Mapping) and set(value) <= {"low", "high"} and len(value) == 2:
            low, high = float(value["low"]), float(value["high"])
            if not (0 < low < high and math.isfinite(high)):
                raise SpaceError(f"{key}: empty or invalid range low={low}, high={high} (need 0 < low < high, log scale)")
            return cls(low=low, high=high)
        raise SpaceError(f"{key}: expected a number, a list of choices or {{low, high}}, got {value!r}")

    def suggest(self, trial, name: str) -> float:
        if self.fixed is not None:
            return self.fixed
        if self.choices:
            return float(trial.suggest_categorical(name, list(self.choices))) if len(self.choices) > 1 else self.choices[0]
        return trial.suggest_float(name, self.low, self.high, log=True)

    def param(self, name: str, value: float) -> dict[str, float]:
        """The parameter a trial would need to produce ``value``; raises NotInSpace if it cannot."""
        if self.fixed is not None:
            if not math.isclose(value, self.fixed):
                raise NotInSpace(f"{name}={value} but the space fixes it to {self.fixed}")
            return {}
        if self.choices:
            match = [c for c in self.choices if math.isclose(c, value)]
            if not match:
                raise NotInSpace(f"{name}={value} is not among {list(self.choices)}")
            return {name: match[0]} if len(self.choices) > 1 else {}
        if not self.low <= value <= self.high:
            raise NotInSpace(f"{name}={value} is outside [{self.low}, {self.high}]")
        return {name: value}

    @property
    def is_continuous(self) -> bool:
        return self.low is not None


@dataclass(frozen=True)
class LayerGroup:
    """Candidate layers of one kind (content or style) and how many to pick, with a weight each."""

    candidates: dict[str, list[str]]  # arch -> layer names
    min_layers: int
    max_layers: int
    weight: Choice
    prefix: str  # "" for content, "style_" for style

    def use_name(self, layer: str) -> str:
        return f"use_{self.prefix}{layer}"

    def weight_name(self, layer: str) -> str:
        return f"w_{self.prefix}{layer}"


def _parse_group(value: Any, key: str, archs: list[str], prefix: str) -> LayerGroup | None:
    if not value:
        return None
    if not isinstance(value, Mapping):
        raise SpaceError(f"search_space.{key} must be a mapping with candidates, min_layers, max_layers, weight")
    unknown = set(value) - {"candidates", "min_layers", "max_layers", "weight"}
    if unknown:
        raise SpaceError(f"unknown key(s) {', '.join(sorted(unknown))} in search_space.{key}")
    raw = value.get("candidates")
    if isinstance(raw, Mapping):
        # The map may name more networks than `arch` lists, so that narrowing `arch` on the command line
        # (search_space.arch=[resnet18]) keeps that network's candidates; every key must be a network.
        unknown = [str(a) for a in raw if find_network(str(a)) is None]
        if unknown:
            raise SpaceError(f"search_space.{key}.candidates names {', '.join(unknown)}, not a known loss "
                             f"network; choose from {', '.join(network_names())} (or declare it: "
                             "loss_net/<name>.yaml in your --config-dir)")
        missing = [a for a in archs if a not in raw]
        if missing:
            raise SpaceError(f"search_space.{key}.candidates has no list for {', '.join(missing)}")
        candidates = {a: list(raw[a]) for a in archs}
    elif isinstance(raw, Sequence) and not isinstance(raw, str):
        candidates = {a: list(raw) for a in archs}
    else:
        raise SpaceError(f"search_space.{key}.candidates must be a list of layer names (or arch -> list)")
    for arch, names in candidates.items():
        if not names:
            raise SpaceError(f"search_space.{key}.candidates is empty for {arch}")
        if len(set(names)) != len(names):
            raise SpaceError(f"search_space.{key}.candidates for {arch} lists a layer twice")
        try:
            validate_layers(arch, names)
        except LayerError as err:
            raise SpaceError(f"search_space.{key}.candidates: {err}") from None
    n_min = int(value.get("min_layers", 1))
    n_max = int(value.get("max_layers", min(len(c) for c in candidates.values())))
    fewest = min(len(c) for c in candidates.values())
    if n_min < 0 or n_max < max(n_min, 1) or n_min > fewest:
        raise SpaceError(
            f"search_space.{key}: need 0 <= min_layers <= max_layers, max_layers >= 1 and min_layers <= the "
            f"{fewest} candidates; got min_layers={n_min}, max_layers={n_max}"
        )
    weight = Choice.parse(value.get("weight", 1.0), f"search_space.{key}.weight")
    return LayerGroup(candidates, n_min, n_max, weight, prefix)


@dataclass(frozen=True)
class SearchSpace:
    """A parsed ``search_space`` config. ``weights`` are ``loss_net.weights`` (see ``weights_for``)."""

    archs: list[str]
    content: LayerGroup | None
    style: LayerGroup | None
    ratio: Choice | None
    pixel_weight: Choice
    tv_weight: Choice
    criteria: list[str]
    baselines: list[str] = field(default_factory=list)
    weights: str | None = "imagenet"

    def weights_for(self, arch: str) -> str:
        """The weights a trial of ``arch`` uses: ``random`` for every network when ``loss_net.weights=random``
        (a smoke run); else a declared network's own (its declaration's, by default its builder's or timm's
        pretrained) and ``loss_net.weights`` for a built-in one."""
        return weights_for(arch, self.weights)

    @property
    def random_weights(self) -> bool:
        """True when any network of the space runs with random weights."""
        return any(is_random(self.weights_for(a)) for a in self.archs)

    @classmethod
    def from_config(cls, spec: Mapping[str, Any], weights: str | None = "imagenet") -> SearchSpace:
        known = {"arch", "content", "style", "content_style_ratio", "pixel_weight", "tv_weight", "criterion",
                 "baselines", "name"}
        unknown = set(spec) - known
        if unknown:
            raise SpaceError(f"unknown key(s) {', '.join(sorted(unknown))} in search_space; valid: {', '.join(sorted(known))}")
        arch = spec.get("arch", "vgg16")
        archs = [arch] if isinstance(arch, str) else list(arch)
        try:
            for a in archs:
                check_arch(a)
        except LayerError as err:
            raise SpaceError(f"search_space.arch: {err}") from None
        if not archs:
            raise SpaceError(f"search_space.arch is empty; choose from {', '.join(network_names())}")
        content = _parse_group(spec.get("content"), "content", archs, "")
        style = _parse_group(spec.get("style"), "style", archs, "style_")
        ratio = None
        if style is not None and content is not None:
            ratio = Choice.parse(spec.get("content_style_ratio", 1.0), "search_space.content_style_ratio")
            if ratio.fixed == 0 or 0.0 in ratio.choices:
                raise SpaceError("search_space.content_style_ratio must be > 0")
        criterion = spec.get("criterion", "mse")
        criteria = [criterion] if isinstance(criterion, str) else list(criterion)
        bad = [c for c in criteria if c not in CRITERIA]
        if bad or not criteria:
            raise SpaceError(f"search_space.criterion: unknown {bad or 'empty'}; choose from {', '.join(CRITERIA)}")
        space = cls(
            archs=archs, content=content, style=style, ratio=ratio,
            pixel_weight=Choice.parse(spec.get("pixel_weight"), "search_space.pixel_weight"),
            tv_weight=Choice.parse(spec.get("tv_weight"), "search_space.tv_weight"),
            criteria=criteria, baselines=list(spec.get("baselines") or []),
            weights=None if weights is None else str(weights),
        )
        if content is None and style is None and space.pixel_weight.fixed in (None, 0.0) and not space.pixel_weight.choices:
            raise SpaceError("search_space has no content or style layers and no pixel_weight: nothing to search")
        return space

    @property
    def groups(self) -> list[LayerGroup]:
        return [g for g in (self.content, self.style) if g is not None]

    @property
    def is_grid_searchable(self) -> bool:
        choices = [g.weight for g in self.groups] + [self.pixel_weight, self.tv_weight]
        if self.ratio is not None:
            choices.append(self.ratio)
        return not any(c.is_continuous for c in choices)

    def suggest(self, trial) -> LossConfig:
        """Ask ``trial`` for every parameter and build the layer config it names.

        Raises:
            Infeasible: nothing is left to optimise (no layer chosen and no pixel term).
        """
        arch = trial.suggest_categorical("arch", self.archs) if len(self.archs) > 1 else self.archs[0]
        chosen = {group.prefix: self._pick_layers(trial, group, group.candidates[arch]) for group in self.groups}
        content_weight, style_weight = 1.0, 0.0
        if self.style is not None:
            # ratio = content_weight / style_weight with content_weight fixed at 1.
            ratio = self.ratio.suggest(trial, "content_style_ratio") if self.ratio else 1.0
            content_weight, style_weight = (1.0, 1.0 / ratio) if self.content is not None else (0.0, 1.0)
        config = LossConfig(
            arch=arch, weights=self.weights_for(arch),
            content_layers=chosen.get("", {}), style_layers=chosen.get("style_", {}),
            content_weight=content_weight, style_weight=style_weight,
            pixel_weight=self._pixel_weight(trial, any(chosen.values())),
            tv_weight=self.tv_weight.suggest(trial, "tv_weight"),
            criterion=trial.suggest_categorical("criterion", self.criteria) if len(self.criteria) > 1 else self.criteria[0],
        )
        try:
            config.check_has_terms()
        except ConfigError as err:
            raise Infeasible(str(err)) from None
        return config

    def _pixel_alone(self) -> float | None:
        """The pixel weight of a config without layers when ``pixel_weight`` is a choice of zero and more: the
        largest choice, taken without asking the trial.

        With no layer the pixel term is the whole loss, so a zero would leave nothing to optimise. Asked anyway,
        a sampler that has learnt the layer-free region (the pixel loss often scores well) keeps proposing it with
        a zero: TPE ignores the failed trials such configs become, so it never learns otherwise, and a sweep
        stopped after 50 of them in a row (the offline demo did).
        """
        choices = self.pixel_weight.choices
        if choices and len(choices) > 1 and min(choices) <= 0 < max(choices):
            return float(max(choices))
        return None

    def _pixel_weight(self, trial, has_layers: bool) -> float:
        alone = self._pixel_alone()
        if not has_layers and alone is not None:
            return alone
        return self.pixel_weight.suggest(trial, "pixel_weight")

    @staticmethod
    def _pick_layers(trial, group: LayerGroup, candidates: list[str]) -> dict[str, float]:
        """Ask ``use_<layer>`` flags until ``max_layers`` are chosen; force the rest when ``min_layers`` needs them.

        Independent flags would break min/max in most trials (1 or 2 of 10 candidates: 95% of draws), so
        flags are asked in turn and never past the point where they cannot change the outcome. The turn
        starts at a candidate rotated by the trial number, so no layer is favoured by its place in the list.
        """
        n = len(candidates)
        start = trial.number % n if getattr(trial, "number", None) is not None else 0
        order = candidates[start:] + candidates[:start]
        picked: dict[str, float] = {}
        for i, layer in enumerate(order):
            if len(picked) >= group.max_layers:
                break
            if group.min_layers - len(picked) >= n - i:
                use = True  # the remaining candidates are all needed to reach min_layers
            else:
                use = trial.suggest_categorical(group.use_name(layer), [True, False])
            if use:
                picked[layer] = group.weight.suggest(trial, group.weight_name(layer))
        return {layer: picked[layer] for layer in candidates if layer in picked}  # network order

    def params_for(self, config: LossConfig) -> dict[str, Any]:
        """The trial parameters that make ``suggest`` return ``config`` (to enqueue literature baselines).

        Raises:
            NotInSpace: saying why the config does not fit this space.
        """
        params: dict[str, Any] = {}
        arch = config.arch
        if not config.layers and arch not in self.archs:
            arch = self.archs[0]  # a pixel-only loss runs no loss network: it fits a space of any network
        if arch not in self.archs:
            raise NotInSpace(f"loss network {arch} is not in search_space.arch {self.archs}")
        if len(self.archs) > 1:
            params["arch"] = arch
        for group, layers in ((self.content, config.content_layers), (self.style, config.style_layers)):
            if group is None:
                if layers:
                    raise NotInSpace(f"the space has no {'style' if layers is config.style_layers else 'content'} layers")
                continue
            candidates = group.candidates[arch]
            outside = [name for name in layers if name not in candidates]
            if outside:
                raise NotInSpace(f"layers {', '.join(outside)} are not candidates")
            if not group.min_layers <= len(layers) <= group.max_layers:
                raise NotInSpace(f"{len(layers)} layers, outside {group.min_layers}..{group.max_layers}")
            for name in candidates:
                params[group.use_name(name)] = name in layers
                if name in layers:
                    params.update(group.weight.param(group.weight_name(name), layers[name]))
        if self.style is not None:
            if self.content is not None:
                if not math.isclose(config.content_weight, 1.0):
                    raise NotInSpace("content_weight must be 1 (the space searches the ratio)")
                if self.ratio is not None:
                    params.update(self.ratio.param("content_style_ratio", config.content_weight / config.style_weight))
        elif config.style_weight and config.style_layers:
            raise NotInSpace("the space has no style layers")
        alone = self._pixel_alone()
        if not config.layers and alone is not None:
            if not math.isclose(config.pixel_weight, alone):
                raise NotInSpace(f"pixel_weight={config.pixel_weight} without layers; the space takes {alone} then")
        else:
            params.update(self.pixel_weight.param("pixel_weight", config.pixel_weight))
        params.update(self.tv_weight.param("tv_weight", config.tv_weight))
        if config.criterion not in self.criteria:
            raise NotInSpace(f"criterion {config.criterion} is not in {self.criteria}")
        if len(self.criteria) > 1:
            params["criterion"] = config.criterion
        return params

    def grid(self) -> dict[str, list[Any]]:
        """Every parameter's values, for Optuna's GridSampler (only when nothing is continuous)."""
        if not self.is_grid_searchable:
            raise SpaceError(
                "study.sampler=grid needs a space without {low, high} ranges: give weights as numbers or lists"
            )
        grid: dict[str, list[Any]] = {}
        if len(self.archs) > 1:
            grid["arch"] = list(self.archs)
        names = {n for g in self.groups for c in g.candidates.values() for n in c}
        for group in self.groups:
            for name in sorted({n for c in group.candidates.values() for n in c} & names):
                grid[group.use_name(name)] = [True, False]
                if len(group.weight.choices) > 1:
                    grid[group.weight_name(name)] = list(group.weight.choices)
        for name, choice in (("content_style_ratio", self.ratio), ("pixel_weight", self.pixel_weight),
                             ("tv_weight", self.tv_weight)):
            if choice is not None and len(choice.choices) > 1:
                grid[name] = list(choice.choices)
        if len(self.criteria) > 1:
            grid["criterion"] = list(self.criteria)
        return grid


def metric_overlap_warning(archs: Sequence[str], lpips_net: str, objectives: Sequence[str] | None = None
                           ) -> str | None:
    """One warning line when a searched loss network is also the LPIPS backbone that grades the trials.

    LPIPS then partly measures the loss against itself and rewards configs that match its own features.

    Args:
        archs: the loss networks searched (``SearchSpace.archs``).
        lpips_net: ``metrics.lpips.net`` (``alex``, ``vgg``, ``squeeze``).
        objectives: the metrics the study optimises; without one computed on the LPIPS backbone
            (`lpips_graded`: lpips, content_lpips, style_distance) there is nothing to say. None: as if there were.
    """
    shared = self_graded_archs(archs, lpips_net)
    if not shared or (objectives is not None and not lpips_graded(objectives)):
        return None
    backbone = shared[0]
    others = [net for net, arch in LPIPS_NETS.items() if arch not in archs]
    instead = f"; metrics.lpips.net={others[0]} would grade independently" if others else ""
    return (f"warning: {backbone} is both a loss network searched and the backbone of LPIPS "
            f"(metrics.lpips.net={lpips_net}): lpips rewards {backbone} trials for matching its own features{instead}")
