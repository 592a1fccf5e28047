"""The study a sweep runs: validated before anything is created, then created (or resumed) with its
literature baselines enqueued, its trials reserved one at a time, and summed up.

Our own ask/tell loop (search/loop/worker.py) rather than Hydra's Optuna sweeper: the training reports every
evaluation to the trial so it can be pruned, baselines are enqueued first, and every trial (pruned and
failed ones too) is recorded with its reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from ...config import literature_loss
from ...lossnet.loss import LossConfig
from ...lossnet.registry import loss_network
from ...lossnet.weights import any_random, ready_weights, weights_label
from ...outputs import RANDOM_BANNER
from ...progress import write
from ...settings import Settings, StudySettings, settings_to_dict
from ...trial.kinds import Training, lpips_used, make_training
from ...trial.metrics import METRIC_DIRECTIONS
from ..results import SweepResult, best_rows, counts, is_repeat, log_summary, noise_lines
from ..storage import (
    StudyError,
    check_study_name,
    database_url,
    fail_dead_trials,
    journal_path,
    open_storage,
    redact,
    sqlite_path,
    storage_lock,
    storage_url,
)
from ..tracking import StudyTracker, check_tracking, probe_tracking
from .algorithms import make_pruner, make_sampler
from .space import NotInSpace, SearchSpace, metric_overlap_warning

__all__ = ["Prepared", "SweepResult", "enqueue_baselines", "prepare_study", "reserve_trial", "resolve_objectives",
           "summarize"]

DIRECTIONS = ("minimize", "maximize")


def resolve_objectives(study: StudySettings, training: Training) -> list[tuple[str, str]]:
    """``[(metric, direction)]`` from ``study.objectives`` and ``study.directions``, validated.

    The built-in training defaults to its task's objectives and reports only the task's metrics; a user's
    training (``trial=python|command``) names its own. Known metric names keep their directions; any other
    name needs ``study.directions``.
    """
    names, directions = list(study.objectives or []), list(study.directions or [])
    if training.kind == "builtin":
        available = training.metrics
        names = names or list(training.default_objectives)
        unknown = [n for n in names if n not in available]
        if unknown:
            raise StudyError(f"unknown objective metric {', '.join(map(repr, unknown))} for this task; choose from "
                             f"{', '.join(available)}")
    elif not names:
        raise StudyError(f"trial={training.kind} needs study.objectives: the metric names your training returns, "
                         "e.g. study.objectives=[lpips,psnr_y] (add study.directions for names layersearch does not know)")
    if len(set(names)) != len(names):
        raise StudyError(f"study.objectives lists a metric twice: {names}")
    if directions:
        if len(directions) != len(names):
            raise StudyError(f"study.directions has {len(directions)} entries for {len(names)} objectives {names}")
        bad = [d for d in directions if d not in DIRECTIONS]
        if bad:
            raise StudyError(f"study.directions: {bad[0]!r} is not minimize or maximize")
        clash = [(n, d) for n, d in zip(names, directions, strict=True) if METRIC_DIRECTIONS.get(n, d) != d]
        if clash:
            name, direction = clash[0]
            raise StudyError(f"study.directions: {name} is always {METRIC_DIRECTIONS[name]}d, not {direction}d; "
                             "name your own metric differently")
        return list(zip(names, directions, strict=True))
    unknown = [n for n in names if n not in METRIC_DIRECTIONS]
    if unknown:
        raise StudyError(f"objective {unknown[0]!r} is not a metric layersearch knows ({', '.join(METRIC_DIRECTIONS)}): "
                         f"say whether to minimize or maximize each objective, e.g. study.directions="
                         f"[{','.join('maximize' if n in unknown else METRIC_DIRECTIONS[n] for n in names)}]")
    return [(n, METRIC_DIRECTIONS[n]) for n in names]


def enqueue_baselines(study: optuna.Study, space: SearchSpace, log, seeds: list[int]) -> list[str]:
    """Enqueue the literature layer configs (conf/loss/) that fit the space; return their names.

    Each baseline runs once per seed in ``seeds``: the first run is a trial like any other, the others are
    repeats (``repeat_of`` its number), queued right behind it, not counted in ``study.n_trials``: they
    measure the study's seed noise (search/results/noise.py).
    """
    queued = []
    for name in space.baselines:
        literature = literature_loss(name)
        literature["loss_net"]["weights"] = space.weights_for(literature["loss_net"]["arch"])
        config = LossConfig.from_mapping(literature)
        try:
            params = space.params_for(config)
        except NotInSpace as err:
            log(f"baseline {name} does not fit the space ({err}); not enqueued")
            continue
        study.enqueue_trial(params, user_attrs={"baseline": name, "seed": seeds[0]})
        first = max(t.number for t in study.get_trials(deepcopy=False))
        for seed in seeds[1:]:
            study.enqueue_trial(params, user_attrs={"baseline": name, "seed": seed, "repeat_of": first})
        queued.append(name)
    return queued


@dataclass
class Prepared:
    """A study ready for trials: created, checked, baselines enqueued, its MLflow experiment open."""

    study: optuna.Study
    url: str
    objectives: list[tuple[str, str]]
    space: SearchSpace
    random_weights: bool
    n_trials: int
    grace_s: float
    training: Training
    settings: Settings
    n_warmup: int
    tracker: StudyTracker | None = None


@dataclass
class _Plan:
    """Everything a sweep needs, validated, before anything exists: nothing here has a side effect."""

    name: str
    objectives: list[tuple[str, str]]
    space: SearchSpace
    n_trials: int
    heartbeat_s: float
    grace_s: float
    sampler: Any
    pruner: Any
    url: str
    random_weights: bool
    training: Training
    baseline_seeds: list[int]
    retry_s: float
    n_warmup: int


def warmup_steps(study: StudySettings, steps: int) -> int:
    """Training steps before a trial can be pruned: ``study.n_warmup_steps``, or when null
    ``study.warmup_fraction`` of the trial's ``steps`` (where early evaluations start to predict final ones)."""
    if study.n_warmup_steps is not None:
        if study.n_warmup_steps < 0:
            raise StudyError(f"study.n_warmup_steps must be a whole number >= 0 or null, got {study.n_warmup_steps!r}")
        return study.n_warmup_steps
    fraction = study.warmup_fraction
    if not 0 <= fraction < 1:
        raise StudyError(f"study.warmup_fraction must be a number in [0, 1), got {fraction!r}")
    return math.ceil(fraction * steps)


def _plan(settings: Settings, log, fn=None) -> _Plan:
    conf, trainer = settings.study, settings.trainer
    name = check_study_name(conf.name)
    training = make_training(settings, log, fn=fn)
    training.check()
    objectives = resolve_objectives(conf, training)
    space = SearchSpace.from_config(settings.search_space, weights=settings.loss_net.weights)
    if overlap := metric_overlap_warning(space.archs, settings.metrics.lpips.net, [m for m, _ in objectives]):
        log(overlap)
    n_trials, n_startup = conf.n_trials, conf.n_startup_trials
    n_warmup = warmup_steps(conf, trainer.steps)
    if n_trials < 1:
        raise StudyError(f"study.n_trials must be >= 1, got {n_trials}")
    heartbeat_s, grace_s = conf.heartbeat_s, conf.grace_s
    if grace_s <= heartbeat_s:
        raise StudyError(f"study.grace_s ({grace_s:g}) must exceed study.heartbeat_s ({heartbeat_s:g}), or live "
                         "trials would be failed as dead")
    sampler = make_sampler(conf.sampler, space, len(objectives), conf.seed, n_startup)
    pruner = make_pruner(conf.pruner, len(objectives), n_startup, n_warmup, trainer.steps, trainer.eval_every)
    url = storage_url(conf, settings.paths.studies_dir)
    if sqlite_path(url) is None and database_url(url) == database_url(settings.tracking.uri):
        raise StudyError("study.storage and tracking.uri are the same database; Optuna and MLflow both keep an "
                         "alembic_version table there: use separate databases (e.g. .../optuna and .../mlflow)")
    check_tracking(settings.tracking.uri, settings.tracking.artifacts)
    lpips = settings.metrics.lpips.weights if lpips_used(settings, [m for m, _ in objectives]) else None
    random_weights = space.random_weights or any_random(lpips)
    n_seeds = conf.baseline_seeds
    if n_seeds < 1:
        raise StudyError(f"study.baseline_seeds must be >= 1, got {n_seeds}")
    first = trainer.seed
    return _Plan(name, objectives, space, n_trials, heartbeat_s, grace_s, sampler, pruner, url, random_weights,
                 training, list(range(first, first + n_seeds)), conf.db_retry_s, n_warmup)


def _lpips_label(settings: Settings, objectives: list[str]) -> str:
    # "not used" when no computed metric reads LPIPS (a study scored by haarpsi and psnr_y).
    lpips = settings.metrics.lpips
    return f"{lpips.net}/{weights_label(lpips.weights)}" if lpips_used(settings, objectives) else "not used"


def prepare_study(settings: Settings, log=write, tracker: bool = True, prepare_training: bool = True,
                  fn=None) -> Prepared:
    """Validate the config, create or load the study, enqueue baselines; all before any trial runs.

    The order is what makes a refused start leave nothing behind: every key is checked, the stores are
    opened (Optuna's) or probed (MLflow's), the training is prepared (its function imported, its command
    found, or the built-in task built with its weights), and only then are the MLflow experiment and the
    study created and the baselines enqueued. Everything that two
    processes starting together could race on (Optuna's schema, the study, the baselines) happens under
    `storage_lock`, so N sweeps started at the same moment share one study.

    Args:
        prepare_training: False in a launcher that only starts workers (they prepare their own).
        fn: the training function of ``layersearch.sweep(train, ...)`` (``trial=python``), if given as one.
    """
    plan = _plan(settings, log, fn)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own console view says what happens

    def storage_now() -> optuna.storages.BaseStorage:
        return open_storage(plan.url, heartbeat_s=plan.heartbeat_s, grace_s=plan.grace_s, retry_s=plan.retry_s)

    # A server is tested first (it may be unreachable); a study file is only created once all else is known.
    local = sqlite_path(plan.url) or journal_path(plan.url)
    storage = storage_now() if local is None or local.exists() else None
    if storage is not None and plan.name in optuna.study.get_all_study_names(storage):
        _check_same_study(optuna.load_study(study_name=plan.name, storage=storage), plan.objectives, settings,
                          plan.training)
    if tracker:
        probe_tracking(settings.tracking.uri)
    if prepare_training:
        plan.training.prepare()
        for arch in plan.space.archs:  # the loss network's weights: offline ImageNet fails here, not in trial 0
            ready_weights(arch, plan.space.weights_for(arch))
    storage = storage or storage_now()
    study_tracker = None
    if tracker:
        study_tracker = StudyTracker(
            settings.tracking.uri, plan.name, redact(plan.url), artifacts=settings.tracking.artifacts,
            retry_s=plan.retry_s,
            tags={"layersearch.task": _task_label(settings, plan.training),
                  "layersearch.random_weights": str(plan.random_weights).lower(),
                  "layersearch.search_space": _space_name(settings),
                  "layersearch.loss_net_weights": ",".join(dict.fromkeys(map(plan.space.weights_for, plan.space.archs))),
                  "layersearch.lpips": _lpips_label(settings, [m for m, _ in plan.objectives])},
        )
    with storage_lock(plan.url):
        study = optuna.create_study(
            study_name=plan.name, storage=storage, sampler=plan.sampler, pruner=plan.pruner,
            directions=[d for _, d in plan.objectives], load_if_exists=True,
        )
        _check_same_study(study, plan.objectives, settings, plan.training)
        if plan.random_weights and not study.user_attrs.get("random_weights"):
            study.set_user_attr("random_weights", True)
        if prepare_training:  # where each network and its weights came from (the report shows it)
            known = dict(study.user_attrs.get("loss_networks") or {})
            mine = {a: loss_network(a).provenance(plan.space.weights_for(a)) for a in plan.space.archs}
            if any(known.get(a) != p for a, p in mine.items()):
                study.set_user_attr("loss_networks", {**known, **mine})
        new = not study.get_trials(deepcopy=False)
        queued = enqueue_baselines(study, plan.space, log, plan.baseline_seeds) if new else []
    # Enqueued baselines are WAITING: "so far" counts only trials that have started.
    started = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
    log(f"study {plan.name} in {redact(plan.url)}: {len(started)} trials so far, objectives "
        + ", ".join(f"{m} ({d})" for m, d in plan.objectives))
    if queued:
        repeats = len(plan.baseline_seeds) - 1
        log(f"enqueued literature baselines first: {', '.join(queued)}"
            + (f", each with {repeats} more seed{'s' * (repeats > 1)} to measure the seed noise (not counted in "
               "study.n_trials)" if repeats else ""))
    if plan.random_weights:
        log(RANDOM_BANNER)
    prepared = Prepared(study, plan.url, plan.objectives, plan.space, plan.random_weights, plan.n_trials,
                        plan.grace_s, plan.training, settings, plan.n_warmup, study_tracker)
    if study_tracker is not None:
        fail_dead(prepared, log)
        fixed = study_tracker.backfill(study.get_trials(deepcopy=False), [m for m, _ in plan.objectives])
        if fixed:
            log(f"MLflow: recorded {fixed} trial runs that were missing or left running (from Optuna)")
    return prepared


def _space_name(settings: Settings) -> str:
    """The search space's ``name`` (what a resumed study must keep), '' if the space has none."""
    return str(settings.search_space.get("name", ""))


def _task_label(settings: Settings, training: Training) -> str:
    """``sr_x4`` or ``style`` for the built-in training (read from the class, no data loading), else the kind."""
    if training.kind != "builtin":
        return f"{training.kind}:{training.label}"
    from ...trial.tasks import task_class

    return task_class(settings.task).label(settings.task.params)


def fail_dead(prepared: Prepared, log) -> None:
    """Fail (and retry once) the running trials of workers whose heartbeat stopped."""
    for dead in fail_dead_trials(prepared.study, prepared.url, prepared.grace_s):
        reason = dead.user_attrs.get("fail_reason", "worker died")
        log(f"trial {dead.number}: FAIL ({reason}); retried once with the same parameters")
        if prepared.tracker is not None:
            prepared.tracker.kill_trial_runs(dead.number, reason)


def reserve_trial(study: optuna.Study, url: str, n_trials: int) -> tuple[optuna.Trial | None, int]:
    """Ask for a trial only while COMPLETE + PRUNED + RUNNING < n_trials; returns (trial or None, done).

    Optuna's own ``n_trials`` counts per process, so N workers would run up to N times too many. Counting
    and asking under `storage_lock` makes the check and the new RUNNING trial one step for every worker,
    so the study ends with exactly ``n_trials`` COMPLETE + PRUNED first runs (a trial that fails frees its
    slot). The baselines' seed repeats are not counted: one that is next in the queue always runs.
    None with done < n_trials means "the last trials are running elsewhere: wait".
    """
    with storage_lock(url):
        trials = study.get_trials(deepcopy=False)
        states = [t.state for t in trials if not is_repeat(t)]
        done = states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED)
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        repeat_next = bool(waiting) and is_repeat(min(waiting, key=lambda t: t.number))
        if done + states.count(TrialState.RUNNING) >= n_trials and not repeat_next:
            return None, done
        return study.ask(), done


def _check_same_study(study: optuna.Study, objectives, settings: Settings, training: Training) -> None:
    """A resumed study must keep its objectives, search space and kind of training, or its trials mean
    different things; a new one records them (confirm, report and export read them back)."""
    attrs = study.user_attrs
    names = [m for m, _ in objectives]
    space_name = _space_name(settings)
    if "objectives" in attrs:
        if attrs["objectives"] != names:
            raise StudyError(f"study {study.study_name} was run with objectives {attrs['objectives']}, not {names}; "
                             "use another study.name")
        if attrs.get("search_space") != space_name:
            raise StudyError(f"study {study.study_name} was run with search_space={attrs.get('search_space')}, "
                             f"not {space_name}; use another study.name")
        if attrs.get("trial_kind", "builtin") != training.kind:
            raise StudyError(f"study {study.study_name} was run with trial={attrs.get('trial_kind', 'builtin')}, "
                             f"not trial={training.kind}; use another study.name")
        return
    study.set_user_attr("objectives", names)
    study.set_user_attr("search_space", space_name)
    study.set_user_attr("task", settings.task.target if training.kind == "builtin" else training.kind)
    study.set_user_attr("trial_kind", training.kind)
    study.set_user_attr("trial", training.label)
    study.set_user_attr("lpips", _lpips_label(settings, names))
    study.set_user_attr("search_space_config", settings_to_dict(settings.search_space))


def summarize(prep: Prepared) -> SweepResult:
    """The study's counts and best rows as they stand (after the workers), summary run refreshed."""
    study, objectives = prep.study, prep.objectives
    result = SweepResult(study.study_name, redact(prep.url), counts(study), best_rows(study, objectives),
                         objectives, prep.random_weights)
    result.noise_lines = noise_lines(study, objectives)
    result.experiment_id = prep.tracker.experiment_id if prep.tracker else None
    if prep.tracker is not None:
        prep.tracker.backfill(study.get_trials(deepcopy=False), [m for m, _ in objectives])
        if result.best_rows:
            log_summary(study, objectives, prep.tracker, prep.url, prep.random_weights)
    return result
