"""The sweep: an Optuna study of short training runs, recorded in MLflow.

Our own ask/tell loop rather than Hydra's Optuna sweeper: the training run reports every evaluation to the
trial so it can be pruned, baselines are enqueued first, and every trial (pruned and failed ones too) is
recorded with its reason.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from hydra.utils import get_class
from optuna.trial import TrialState
from tqdm.auto import tqdm

from ..config import literature_loss
from ..lossnet.loss import LossConfig
from ..lossnet.weights import any_random, weights_label
from ..outputs import RANDOM_BANNER
from ..trial.metrics import METRIC_DIRECTIONS
from ..trial.tasks import build_task
from ..trial.train import resolve_device
from .algorithms import MultiObjectiveMedian, make_pruner, make_sampler
from .export import provenance_config
from .runner import run_trial
from .space import NotInSpace, SearchSpace
from .storage import (
    DB_RETRY_S,
    GRACE_S,
    HEARTBEAT_S,
    StudyError,
    check_study_name,
    database_url,
    fail_dead_trials,
    open_storage,
    redact,
    sqlite_path,
    storage_lock,
    storage_url,
)
from .tracking import StudyTracker

#: Consecutive infeasible trials after which the space is judged (nearly) impossible to sample.
MAX_INFEASIBLE_IN_A_ROW = 50
#: Consecutive failed trainings (non-finite loss) after which the sweep stops instead of looping.
MAX_FAILED_IN_A_ROW = 5


def task_metrics(task_cfg: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(all metrics the task reports, its default objectives), read from the class without building it."""
    cls = get_class(str(task_cfg["_target_"]))
    return tuple(cls.metrics or cls.objectives), tuple(cls.objectives)


def resolve_objectives(study_cfg: Mapping[str, Any], task_cfg: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``[(metric, direction)]`` from ``study.objectives`` (or the task's defaults), validated."""
    available, default = task_metrics(task_cfg)
    names = study_cfg.get("objectives") or list(default)
    if isinstance(names, str):
        names = [names]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise StudyError(
            f"unknown objective metric {', '.join(map(repr, unknown))} for this task; choose from {', '.join(available)}"
        )
    if len(set(names)) != len(names):
        raise StudyError(f"study.objectives lists a metric twice: {names}")
    return [(n, METRIC_DIRECTIONS[n]) for n in names]


@dataclass
class SweepResult:
    study_name: str
    storage: str
    counts: dict[str, int]
    best_rows: dict[str, dict[str, float]]
    objectives: list[tuple[str, str]]
    random_weights: bool
    seconds_total: float = 0.0
    seconds_in_training: float = 0.0
    ran_trials: int = 0
    experiment_id: str | None = None


def _counts(study: optuna.Study) -> dict[str, int]:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return {
        "complete": states.count(TrialState.COMPLETE),
        "pruned": states.count(TrialState.PRUNED),
        "failed": states.count(TrialState.FAIL),
    }


def _best_rows(study: optuna.Study, objectives: list[tuple[str, str]]) -> dict[str, dict[str, float]]:
    """Best trial (single objective) or the Pareto front, as printable rows, baselines named."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return {}
    best = study.best_trials if len(objectives) > 1 else [study.best_trial]
    rows = {}
    for t in sorted(best, key=lambda t: t.number):
        label = f"#{t.number}" + (f" ({t.user_attrs['baseline']})" if t.user_attrs.get("baseline") else "")
        rows[label] = dict(zip([m for m, _ in objectives], t.values, strict=True))
    for t in complete:  # the baselines always appear, so the table answers "did the search beat them?"
        if t.user_attrs.get("baseline"):
            label = f"#{t.number} ({t.user_attrs['baseline']})"
            rows.setdefault(label, dict(zip([m for m, _ in objectives], t.values, strict=True)))
    return rows


def enqueue_baselines(study: optuna.Study, space: SearchSpace, log) -> list[str]:
    """Enqueue the literature layer configs (conf/loss/) that fit the space; return their names."""

    queued = []
    for name in space.baselines:
        literature = literature_loss(name)
        literature["loss_net"]["weights"] = space.weights
        config = LossConfig.from_mapping(literature)
        try:
            params = space.params_for(config)
        except NotInSpace as err:
            log(f"baseline {name} does not fit the space ({err}); not enqueued")
            continue
        study.enqueue_trial(params, user_attrs={"baseline": name})
        queued.append(name)
    return queued


class Interrupted(KeyboardInterrupt):
    """SIGTERM (what SLURM sends before preempting a job): handled like Ctrl-C, exit status 143."""

    exit_code = 143


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM into `Interrupted` for the block, so the running trial is recorded as interrupted."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    tracker: StudyTracker | None = None


def prepare_study(cfg: Mapping[str, Any], log=tqdm.write, tracker: bool = True) -> Prepared:
    """Validate the config, create or load the study, enqueue baselines; all before any trial runs.

    Everything that two processes starting together could race on (Optuna's schema, the study, the
    baselines) happens under `storage_lock`, so N sweeps started at the same moment share one study.
    """
    study_cfg, trainer = cfg["study"], cfg["trainer"]
    name = check_study_name(study_cfg.get("name"))
    objectives = resolve_objectives(study_cfg, cfg["task"])
    space = SearchSpace.from_config(cfg["search_space"], weights=str(cfg["loss_net"]["weights"]))
    n_trials, n_startup = int(study_cfg["n_trials"]), int(study_cfg.get("n_startup_trials", 4))
    n_warmup = int(study_cfg.get("n_warmup_steps", 0))
    if n_trials < 1:
        raise StudyError(f"study.n_trials must be >= 1, got {n_trials}")
    heartbeat_s = float(study_cfg.get("heartbeat_s") or HEARTBEAT_S)
    grace_s = float(study_cfg.get("grace_s") or GRACE_S)
    if grace_s <= heartbeat_s:
        raise StudyError(f"study.grace_s ({grace_s:g}) must exceed study.heartbeat_s ({heartbeat_s:g}), or live "
                         "trials would be failed as dead")
    sampler = make_sampler(str(study_cfg["sampler"]), space, len(objectives), int(study_cfg.get("seed", 0)), n_startup)
    pruner = make_pruner(str(study_cfg["pruner"]), len(objectives), n_startup, n_warmup, trainer)
    url = storage_url(study_cfg, cfg["paths"]["studies_dir"])
    if sqlite_path(url) is None and database_url(url) == database_url(str(cfg["tracking"]["uri"])):
        raise StudyError("study.storage and tracking.uri are the same database; Optuna and MLflow both keep an "
                         "alembic_version table there: use separate databases (e.g. .../optuna and .../mlflow)")
    retry_s = float(study_cfg.get("db_retry_s", DB_RETRY_S))
    storage = open_storage(url, heartbeat_s=heartbeat_s, grace_s=grace_s, retry_s=retry_s)
    random_weights = any_random(space.weights, cfg["metrics"]["lpips"]["weights"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own console view says what happens
    with storage_lock(url):
        study = optuna.create_study(
            study_name=name, storage=storage, sampler=sampler, pruner=pruner,
            directions=[d for _, d in objectives], load_if_exists=True,
        )
        _check_same_study(study, objectives, cfg)
        if random_weights and not study.user_attrs.get("random_weights"):
            study.set_user_attr("random_weights", True)
        new = not study.get_trials(deepcopy=False)
        queued = enqueue_baselines(study, space, log) if new else []
    log(f"study {name} in {redact(url)}: {len(study.get_trials(deepcopy=False))} trials so far, objectives "
        + ", ".join(f"{m} ({d})" for m, d in objectives))
    if queued:
        log(f"enqueued literature baselines first: {', '.join(queued)}")
    if random_weights:
        log(RANDOM_BANNER)
    prepared = Prepared(study, url, objectives, space, random_weights, n_trials, grace_s)
    if tracker:
        prepared.tracker = StudyTracker(
            str(cfg["tracking"]["uri"]), name, redact(url), artifacts=cfg["tracking"].get("artifacts"), retry_s=retry_s,
            tags={"layersearch.task": _task_label(cfg["task"]),
                  "layersearch.random_weights": str(random_weights).lower(),
                  "layersearch.search_space": str(cfg["search_space"].get("name", "")),
                  "layersearch.loss_net_weights": space.weights,
                  "layersearch.lpips": f"{cfg['metrics']['lpips'].get('net', 'alex')}/"
                                       f"{weights_label(cfg['metrics']['lpips'].get('weights', 'imagenet'))}"},
        )
        _fail_dead(prepared, log)
        fixed = prepared.tracker.backfill(study.get_trials(deepcopy=False), [m for m, _ in objectives])
        if fixed:
            log(f"MLflow: recorded {fixed} trial runs that were missing or left running (from Optuna)")
    return prepared


def _task_label(task_cfg: Mapping[str, Any]) -> str:
    """The task's name as its instance reports it (``sr_x4``), without building it (no data loading)."""
    name = str(get_class(str(task_cfg["_target_"])).name)
    return f"sr_x{task_cfg['scale']}" if name.startswith("sr_x") and "scale" in task_cfg else name


def _fail_dead(prepared: Prepared, log) -> None:
    for dead in fail_dead_trials(prepared.study, prepared.url, prepared.grace_s):
        reason = dead.user_attrs.get("fail_reason", "worker died")
        log(f"trial {dead.number}: FAIL ({reason}); retried once with the same parameters")
        if prepared.tracker is not None:
            prepared.tracker.kill_trial_runs(dead.number, reason)


def reserve_trial(study: optuna.Study, url: str, n_trials: int) -> tuple[optuna.Trial | None, int]:
    """Ask for a trial only while COMPLETE + PRUNED + RUNNING < n_trials; returns (trial or None, done).

    Optuna's own ``n_trials`` counts per process, so N workers would run up to N times too many. Counting
    and asking under `storage_lock` makes the check and the new RUNNING trial one step for every worker,
    so the study ends with exactly ``n_trials`` COMPLETE + PRUNED (a trial that fails frees its slot).
    None with done < n_trials means "the last trials are running elsewhere: wait".
    """
    with storage_lock(url):
        states = [t.state for t in study.get_trials(deepcopy=False)]
        done = states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED)
        if done + states.count(TrialState.RUNNING) >= n_trials:
            return None, done
        return study.ask(), done


def run_sweep(cfg: Mapping[str, Any]) -> SweepResult:
    """Run (or resume) the study ``cfg['study']['name']`` until it has ``n_trials`` complete+pruned trials.

    With ``study.workers > 1`` (or ``study.trials_per_device``, or ``launcher=slurm``) this process
    prepares the study and starts the workers instead (see `launch`); each worker runs this loop.
    """
    from . import launch  # the worker launcher imports this module

    if launch.wants_launcher(cfg):
        return launch.run_launched(cfg)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    log = tqdm.write
    with stop_on_signals():
        prep = prepare_study(cfg, log)
        return _loop(cfg, prep, log)


def summarize(prep: Prepared) -> SweepResult:
    """The study's counts and best rows as they stand (after the workers), summary run refreshed."""
    study, objectives = prep.study, prep.objectives
    result = SweepResult(study.study_name, redact(prep.url), _counts(study), _best_rows(study, objectives),
                         objectives, prep.random_weights)
    result.experiment_id = prep.tracker.experiment_id if prep.tracker else None
    if prep.tracker is not None:
        prep.tracker.backfill(study.get_trials(deepcopy=False), [m for m, _ in objectives])
        if result.best_rows:
            _log_summary(study, objectives, prep.tracker, prep.url, prep.random_weights)
    return result


def _loop(cfg: Mapping[str, Any], prep: Prepared, log) -> SweepResult:
    study, url, objectives, n_trials, tracker = prep.study, prep.url, prep.objectives, prep.n_trials, prep.tracker
    name = study.study_name
    counts = _counts(study)
    done = counts["complete"] + counts["pruned"]
    result = SweepResult(name, redact(url), counts, {}, objectives, prep.random_weights)
    result.experiment_id = tracker.experiment_id
    if done >= n_trials:
        log(f"study {name} already has {done} complete or pruned trials (study.n_trials={n_trials}); nothing to run")
        result.best_rows = _best_rows(study, objectives)
        return result

    started = time.perf_counter()
    device = resolve_device(cfg["trainer"]["device"])
    task = build_task(cfg["task"], cfg["data"], cfg["model"], cfg["metrics"], device)
    multi_pruner = None
    if len(objectives) > 1 and cfg["study"]["pruner"] == "median":
        multi_pruner = MultiObjectiveMedian(study, objectives[0][0], objectives[0][1],
                                            int(cfg["study"].get("n_startup_trials", 4)),
                                            int(cfg["study"].get("n_warmup_steps", 0)))
    timeout = cfg["study"].get("timeout")
    poll_s = min(5.0, float(cfg["study"].get("heartbeat_s") or HEARTBEAT_S))
    bar = tqdm(total=n_trials, initial=done, desc=f"sweep {name}", unit="trial", position=0)
    infeasible_in_a_row = failed_in_a_row = 0
    try:
        while True:
            if timeout and time.perf_counter() - started > float(timeout):
                log(f"study.timeout={timeout}s reached; stopping (resume by running the same command again)")
                break
            _fail_dead(prep, log)
            trial, done = reserve_trial(study, url, n_trials)
            bar.update(done - bar.n)
            if trial is None:
                if done >= n_trials:
                    break
                time.sleep(poll_s)  # the last trials run in other workers; one may die and need a retry
                continue
            state, seconds = run_trial(study, trial, prep.space, task, cfg, objectives, tracker, multi_pruner, log)
            result.seconds_in_training += seconds
            result.ran_trials += 1
            if state == "INFEASIBLE":
                infeasible_in_a_row += 1
                if infeasible_in_a_row >= MAX_INFEASIBLE_IN_A_ROW:
                    raise StudyError(f"{infeasible_in_a_row} sampled configs in a row had nothing to optimise "
                                     "(no layer and no pixel term); raise min_layers or fix pixel_weight")
                continue
            infeasible_in_a_row = 0
            # Failed trials do not count towards n_trials, so a sweep whose every trial fails must stop.
            failed_in_a_row = failed_in_a_row + 1 if state == "FAIL" else 0
            if failed_in_a_row >= MAX_FAILED_IN_A_ROW:
                raise StudyError(f"{failed_in_a_row} trials failed in a row (last: {last_fail_reason(study)}); "
                                 "fix the cause (e.g. trainer.lr) and run the same command again to resume")
            counts = _counts(study)
            bar.update(counts["complete"] + counts["pruned"] - bar.n)
            best = _best_summary(study, objectives)
            bar.set_postfix_str(f"done {counts['complete']} pruned {counts['pruned']} failed {counts['failed']} | {best}")
    finally:
        bar.close()
        result.seconds_total = time.perf_counter() - started
        result.counts = _counts(study)
        result.best_rows = _best_rows(study, objectives)
        if result.best_rows:
            _log_summary(study, objectives, tracker, url, prep.random_weights)
    return result


def last_fail_reason(study: optuna.Study) -> str:
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    return failed[-1].user_attrs.get("fail_reason", "unknown") if failed else "unknown"


def _check_same_study(study: optuna.Study, objectives, cfg) -> None:
    """A resumed study must keep its objectives and search space, or its trials mean different things."""
    attrs = study.user_attrs
    names = [m for m, _ in objectives]
    space_name = str(cfg["search_space"].get("name", ""))
    if "objectives" in attrs:
        if attrs["objectives"] != names:
            raise StudyError(f"study {study.study_name} was run with objectives {attrs['objectives']}, not {names}; "
                             "use another study.name")
        if attrs.get("search_space") != space_name:
            raise StudyError(f"study {study.study_name} was run with search_space={attrs.get('search_space')}, "
                             f"not {space_name}; use another study.name")
        return
    study.set_user_attr("objectives", names)
    study.set_user_attr("search_space", space_name)
    study.set_user_attr("task", str(cfg["task"]["_target_"]))
    study.set_user_attr("search_space_config", to_plain(cfg["search_space"]))


def to_plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def _best_summary(study: optuna.Study, objectives) -> str:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return "no complete trial yet"
    metric, direction = objectives[0]
    pick = min if direction == "minimize" else max
    best = pick(complete, key=lambda t: t.values[0])
    return f"best {metric} {best.values[0]:.4f} (#{best.number})"


def _log_summary(study, objectives, tracker, url, random_weights) -> None:
    names = [m for m, _ in objectives]
    best = study.best_trials if len(objectives) > 1 else [study.best_trial]
    configs = [provenance_config(study, t, names, url) for t in best]
    table = [{"trial": t.number, "baseline": t.user_attrs.get("baseline", ""),
              **dict(zip(names, t.values, strict=True))} for t in best]
    # Locked: two workers finishing together would each replace the summary run and leave two.
    with storage_lock(tracker.uri):
        tracker.log_summary(configs, table, redact(url), extra_params={"random_weights": str(random_weights).lower()})
