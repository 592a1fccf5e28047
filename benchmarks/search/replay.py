"""Replay Optuna studies against the tabular benchmark (`make_table.py`'s data file): a trial costs milliseconds.

A study asks layersearch's own `SearchSpace` (``search_space=sr_lite0`` with at most 2 layers, as the table) for a
config, snaps each layer weight to the table's level of its decade (< 1: 0.3, else 3), draws one of the config's
stored seed repeats at random (so the noise a real sweep sees is kept) and reports that repeat's stored evaluations
step by step to the pruner, exactly as layersearch's runner does (Optuna's pruners for one objective, layersearch's
``MultiObjectiveMedian`` for two). The budget is counted in training steps: a pruned trial costs the steps it ran.

The answer a study gives is what ``layersearch export`` takes: its best COMPLETE trial by the observed primary
objective. Its simple regret is the table's best mean minus that config's table mean (over the stored seeds).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from layersearch.config import literature_loss, load_settings
from layersearch.lossnet.loss import LossConfig
from layersearch.search.loop.algorithms import MultiObjectiveMedian, make_pruner
from layersearch.search.loop.space import SearchSpace
from layersearch.search.loop.study import warmup_steps

PRIMARY, SECOND = "haarpsi", "psnr_y"  # preset=offline's objectives, both maximised
BASELINES = ["lite0_shallow", "lite0_deep", "pixel"]  # conf/search_space/sr_lite0.yaml; weight 1 snaps to 3
STEPS, EVAL_EVERY = 200, 25  # the quickstart's budget, as the table was trained


def _today() -> tuple[int, int]:
    """The start-up trials and pruning warm-up `layersearch sweep preset=offline` uses (conf/study, the preset)."""
    settings = load_settings(["preset=offline"])
    assert settings.trainer.steps == STEPS and settings.trainer.eval_every == EVAL_EVERY, "the table's budget changed"
    return settings.study.n_startup_trials, warmup_steps(settings.study, settings.trainer.steps)


N_STARTUP, WARMUP = _today()


@dataclass
class Table:
    """The stored runs: ``runs[config] = [history of seed 0, 1, ...]``, a history ``[(step, {metric: value})]``."""

    runs: dict[str, list[list[tuple[int, dict[str, float]]]]]
    per_image: dict[str, list[dict[str, list[float]]]]
    meta: dict
    seconds: float
    truth: dict[str, float] = field(default_factory=dict)  # config -> mean final primary over its seeds

    @classmethod
    def load(cls, path: Path) -> Table:
        runs: dict[str, dict[int, list]] = {}
        per_image: dict[str, dict[int, dict]] = {}
        meta, seconds = {}, 0.0
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row["kind"] == "meta":
                meta = row
            elif row["kind"] == "run":
                runs.setdefault(row["config"], {})[row["seed"]] = [(int(s), v) for s, v in row["history"]]
                per_image.setdefault(row["config"], {})[row["seed"]] = row["per_image"]
                seconds += row["seconds"]
        seeds = min(len(v) for v in runs.values())
        # Only configs with every seed, and only the seeds every config has: a cut-short file still compares fairly.
        common = sorted(set.intersection(*(set(v) for v in runs.values())))
        table = cls({k: [v[s] for s in common] for k, v in runs.items()},
                    {k: [v[s] for s in common] for k, v in per_image.items()}, meta, seconds)
        table.truth = {k: float(np.mean([h[-1][1][PRIMARY] for h in hs])) for k, hs in table.runs.items()}
        assert seeds >= len(common)
        return table

    @property
    def n_seeds(self) -> int:
        return len(next(iter(self.runs.values())))

    @property
    def best(self) -> float:
        return max(self.truth.values())

    def top(self, fraction: float) -> set[str]:
        """The best ``ceil(fraction x configs)`` configs by table mean."""
        k = max(1, math.ceil(fraction * len(self.truth)))
        return set(sorted(self.truth, key=self.truth.get, reverse=True)[:k])


def table_space(meta: dict) -> SearchSpace:
    """``search_space=sr_lite0`` as the table holds it: its candidates, at most ``max_layers`` of them."""
    return SearchSpace.from_config({
        "arch": "efficientnet_lite0",
        "content": {"candidates": meta["layers"], "min_layers": 0, "max_layers": meta["max_layers"],
                    "weight": {"low": 0.1, "high": 10.0}},
        "pixel_weight": meta["pixel_levels"], "criterion": "mse"})


def table_key(layers: dict[str, float], pixel: float, levels: list[float]) -> str:
    """The table's config for a sampled one: each weight snapped to the level of its decade of [0.1, 10]."""
    low, high = levels
    parts = [f"{name}@{(low if weight < 1 else high):g}" for name, weight in layers.items()]
    return "+".join(parts + (["pixel"] if pixel else []))


@dataclass(frozen=True)
class Method:
    """One way to search: a sampler, a pruner, one or two objectives."""

    name: str
    sampler: str  # random | tpe | tpe_mv | tpe_group | gp | nsga2
    pruner: str  # none | median | sh | hyperband
    objectives: int = 1
    n_startup: int = N_STARTUP  # the sampler's random start-up trials and the median pruner's
    warmup: int = WARMUP  # steps before the median pruner may stop a trial
    baselines: bool = False  # enqueue the space's literature baselines first, as `layersearch sweep` does

    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        s = optuna.samplers
        return {
            "random": lambda: s.RandomSampler(seed=seed),
            "tpe": lambda: s.TPESampler(seed=seed, n_startup_trials=self.n_startup),  # layersearch's (make_sampler)
            "tpe_mv": lambda: s.TPESampler(seed=seed, n_startup_trials=self.n_startup, multivariate=True),
            "tpe_group": lambda: s.TPESampler(seed=seed, n_startup_trials=self.n_startup, multivariate=True, group=True),
            "gp": lambda: s.GPSampler(seed=seed, n_startup_trials=self.n_startup),
            "nsga2": lambda: s.NSGAIISampler(seed=seed),
        }[self.sampler]()

    def make_pruner(self) -> optuna.pruners.BasePruner:
        if self.pruner == "sh":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=EVAL_EVERY)
        # median and hyperband as `layersearch sweep` builds them (two objectives: a NopPruner, the median is ours)
        return make_pruner(self.pruner, self.objectives, self.n_startup, self.warmup, STEPS, EVAL_EVERY)


@dataclass
class Trace:
    """One replayed study, trial by trial: steps consumed so far and the config its answer was then."""

    steps: list[int] = field(default_factory=list)  # cumulative training steps after each trial
    answer: list[str | None] = field(default_factory=list)  # best complete trial's config after each trial
    pruned: list[bool] = field(default_factory=list)  # whether each trial was pruned


def replay(table: Table, method: Method, seed: int, max_trials: int, max_steps: int) -> Trace:
    """Run ``method`` for up to ``max_trials`` trials or ``max_steps`` training steps, whichever comes first."""
    rng = np.random.default_rng(seed)
    space = table_space(table.meta)
    directions = ["maximize"] * method.objectives
    # A fixed study name: Hyperband assigns trials to brackets by hashing it, so a random one is a random bracket.
    study = optuna.create_study(study_name=f"{method.name} {seed}", directions=directions,
                                sampler=method.make_sampler(seed), pruner=method.make_pruner())
    median = (MultiObjectiveMedian(study, PRIMARY, "maximize", method.n_startup, method.warmup)
              if method.objectives > 1 and method.pruner == "median" else None)
    if method.baselines:
        for name in BASELINES:  # first runs only: their seed repeats are not counted in study.n_trials
            literature = literature_loss(name)
            literature["loss_net"]["weights"] = "imagenet"
            study.enqueue_trial(space.params_for(LossConfig.from_mapping(literature)))
    trace, used = Trace(), 0
    best_value, best_config = -math.inf, None
    while len(trace.steps) < max_trials and used < max_steps:
        trial = study.ask()
        config = space.suggest(trial)
        key = table_key(config.content_layers, config.pixel_weight, table.meta["weight_levels"])
        history = table.runs[key][rng.integers(table.n_seeds)]
        pruned, intermediate, previous = False, {}, 0
        for step, scores in history:
            used, previous = used + step - previous, step
            if method.objectives == 1:
                trial.report(scores[PRIMARY], step)
                pruned = trial.should_prune()
            elif median is not None:
                intermediate[str(step)] = scores[PRIMARY]
                trial.set_user_attr("intermediate", dict(intermediate))
                pruned = median.should_prune(step, intermediate)
            if pruned:
                break
        if pruned:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            final = history[-1][1]
            study.tell(trial, [final[PRIMARY], final[SECOND]][: method.objectives])
            if final[PRIMARY] > best_value:
                best_value, best_config = final[PRIMARY], key
        trace.steps.append(used)
        trace.answer.append(best_config)
        trace.pruned.append(pruned)
    return trace


def short_run_top_k(table: Table, seed: int, budget_steps: int, first_eval: int = EVAL_EVERY,
                    k: int | None = None) -> str:
    """Egele et al. 2023's baseline: train distinct configs (uniformly at random, all of them if the budget
    allows) for one short run of ``first_eval`` steps, train the best ``k`` of them to the end and answer the best
    final. ``k`` (default) takes a quarter of the budget's full-trial equivalents (at least 1); the rest buys short
    runs."""
    rng = np.random.default_rng(seed)
    keys = list(table.runs)
    k = k if k is not None else max(1, budget_steps // STEPS // 4)
    n_short = min(len(keys), max(k, (budget_steps - k * (STEPS - first_eval)) // first_eval))
    chosen = [keys[i] for i in rng.permutation(len(keys))[:n_short]]
    draws = {key: table.runs[key][rng.integers(table.n_seeds)] for key in chosen}
    short = {key: next(v[PRIMARY] for s, v in h if s == first_eval) for key, h in draws.items()}
    finalists = sorted(short, key=short.get, reverse=True)[:k]
    return max(finalists, key=lambda key: draws[key][-1][1][PRIMARY])


def quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*GPSampler.*")
