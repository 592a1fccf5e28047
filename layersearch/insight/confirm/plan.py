"""What `layersearch confirm` retrains: its settings (seeds, steps, level) and the study's candidates.

The study must still compose with the config confirm is given (task, space, objectives, kind of training);
the candidates are its top-k complete trials and every complete literature baseline.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from ...errors import LayersearchError
from ...lossnet.loss import LossConfig
from ...lossnet.weights import any_random
from ...search.loop import SearchSpace
from ...search.results import first_runs, front
from ...search.tracking import trial_run_name
from ...settings import LpipsSettings, Settings
from ...trial.kinds import Training

__all__ = ["Candidate", "ConfirmError", "ConfirmPlan", "check_study", "random_weights_of", "read_plan",
           "select_candidates"]


class ConfirmError(LayersearchError, ValueError):
    """A confirmation that cannot run as asked (bad settings, a study that no longer composes); one line."""


@dataclass(frozen=True)
class ConfirmPlan:
    """The confirmation's budget: which seeds, how many steps, how often to evaluate; the race's level and the
    blocks it waits for before its first test."""

    top_k: int
    seeds: tuple[int, ...]
    steps: int
    eval_every: int
    alpha: float
    first_test: int = 5


def _whole(value: Any, key: str, minimum: int, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
        raise ConfirmError(f"{key} must be a whole number >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfirmError(f"{key} must be >= {minimum}{why}, got {int(value)}")
    return int(value)


def read_plan(settings: Settings) -> ConfirmPlan:
    """The ``confirm`` settings, checked; ``steps: null`` = 10 x ``trainer.steps``.

    ``eval_every: null`` keeps a trial's number of evaluations: ``trainer.eval_every`` scaled by
    ``steps / trainer.steps``.
    """
    conf, trainer = settings.confirm, settings.trainer
    top_k = _whole(conf.top_k, "confirm.top_k", 1)
    n_seeds = _whole(conf.seeds, "confirm.seeds", 2, " (a spread over seeds needs two)")
    first = _whole(conf.first_seed, "confirm.first_seed", 0)
    trial_steps = _whole(trainer.steps, "trainer.steps", 1)
    steps = 10 * trial_steps if conf.steps is None else _whole(conf.steps, "confirm.steps", 1)
    if conf.eval_every is None:
        trial_every = trainer.eval_every or trial_steps
        eval_every = max(1, round(steps * trial_every / trial_steps))
    else:
        eval_every = _whole(conf.eval_every, "confirm.eval_every", 1)
    alpha = conf.alpha
    if not 0 < alpha < 1:
        raise ConfirmError(f"confirm.alpha must be a number between 0 and 1, got {alpha!r}")
    first_test = _whole(conf.first_test, "confirm.first_test", 2, " (a paired test needs two blocks)")
    return ConfirmPlan(top_k, tuple(range(first, first + n_seeds)), steps, eval_every, alpha, first_test)


@dataclass(frozen=True)
class Candidate:
    """One config to retrain: a top trial or a literature baseline of the study."""

    key: str  # "trial_<n>"
    trial: int
    baseline: str | None
    label: str  # "#12 relu2_2+relu4_3", "#0 johnson_sr"
    layer_config: dict[str, Any]
    short_run: dict[str, float]  # the study's values for this trial, by objective
    params: dict[str, Any] = field(default_factory=dict)  # the trial's sampled parameters (Trial.params)


def check_study(study: optuna.Study, settings: Settings, training: Training) -> list[tuple[str, str]]:
    """The study's ``[(objective, direction)]``, after checking it still composes with ``settings``.

    The composed config must name the study's kind of training (and, for the built-in one, its task) and
    search space, the space must still parse, and the built-in task must still report every objective.
    """
    attrs, name = study.user_attrs, study.study_name
    names = attrs.get("objectives")
    if not names:
        raise ConfirmError(f"study {name!r} has no recorded objectives; was it made by `layersearch sweep`?")
    kind = attrs.get("trial_kind", "builtin")
    if kind != training.kind:
        raise ConfirmError(f"study {name!r} was run with trial={kind}, but this config composes trial={training.kind}; "
                           "pass the overrides the sweep ran with")
    if kind == "builtin":
        target = settings.task.target
        if attrs.get("task") and attrs["task"] != target:
            raise ConfirmError(f"study {name!r} was run with task {attrs['task']}, but this config composes {target}; "
                               "pass the overrides the sweep ran with")
        missing = [m for m in names if m not in training.metrics]
        if missing:
            raise ConfirmError(f"the task no longer reports objective(s) {', '.join(missing)} of study {name!r}; "
                               f"it reports {', '.join(training.metrics)}")
    space_name = str(settings.search_space.get("name", ""))
    if attrs.get("search_space") not in (None, space_name):
        raise ConfirmError(f"study {name!r} was run with search_space={attrs['search_space']}, not {space_name}; "
                           "pass the overrides the sweep ran with")
    if "search_space_config" in attrs:
        try:
            SearchSpace.from_config(attrs["search_space_config"], weights=settings.loss_net.weights)
        except LayersearchError as err:
            raise ConfirmError(f"the search space of study {name!r} no longer composes: {err}") from None
    directions = ["minimize" if d == optuna.study.StudyDirection.MINIMIZE else "maximize" for d in study.directions]
    return list(zip(names, directions, strict=True))


def select_candidates(study: optuna.Study, objectives: Sequence[tuple[str, str]], top_k: int) -> list[Candidate]:
    """The top ``top_k`` complete trials, then every complete literature baseline not already among them.

    One objective: by its value. Several: the Pareto front first, then the rest, each part ordered by the
    first (primary) objective; ties go to the earlier trial.
    """
    complete = [t for t in first_runs(study) if t.state == TrialState.COMPLETE and "layer_config" in t.user_attrs]
    if not complete:
        raise ConfirmError(f"study {study.study_name!r} has no complete trial yet; run `layersearch sweep` first")
    sign = 1 if objectives[0][1] == "minimize" else -1
    ranked = sorted(complete, key=lambda t: (sign * t.values[0], t.number))
    if len(objectives) > 1:
        best = {t.number for t in front(complete, [d for _, d in objectives])}
        ranked = [t for t in ranked if t.number in best] + [t for t in ranked if t.number not in best]
    # Distinct configs only: a sampler drawn to a good region proposes the same config again (the offline demo's
    # top 5 were five pixel losses), and retraining it under five names would race it against itself.
    seen: set[str] = set()

    def new_config(t) -> bool:
        key = json.dumps(t.user_attrs["layer_config"], sort_keys=True)
        fresh = key not in seen
        seen.add(key)
        return fresh

    chosen = [t for t in ranked if new_config(t)][:top_k]
    seen = {json.dumps(t.user_attrs["layer_config"], sort_keys=True) for t in chosen}
    chosen += [t for t in sorted(complete, key=lambda t: t.number) if t.user_attrs.get("baseline") and new_config(t)]
    names = [m for m, _ in objectives]
    candidates = []
    for t in chosen:
        layer_config = dict(t.user_attrs["layer_config"])
        try:
            LossConfig.from_mapping(layer_config)
        except LayersearchError as err:
            raise ConfirmError(f"the layer config of trial {t.number} no longer composes: {err}") from None
        baseline = t.user_attrs.get("baseline")
        candidates.append(Candidate(f"trial_{t.number}", t.number, baseline, trial_run_name(t.number, layer_config, baseline),
                                    layer_config, dict(zip(names, t.values, strict=True)), dict(t.params)))
    return candidates


def random_weights_of(candidates: Sequence[Candidate], lpips: LpipsSettings | None) -> bool:
    # The sweep's rule: the space's loss-network weights (recorded in every layer config) or the LPIPS backbone
    # (None when no computed metric reads LPIPS).
    loss_weights = [str(c.layer_config["loss_net"]["weights"]) for c in candidates]
    return any_random(*loss_weights, lpips.weights if lpips is not None else None)
