"""The sweep: an Optuna study of short training runs, recorded in MLflow.

Our own ask/tell loop rather than Hydra's Optuna sweeper: the training run reports every evaluation to the
trial so it can be pruned, baselines are enqueued first, and every trial (pruned and failed ones too) is
recorded with its reason.
"""

from __future__ import annotations

import concurrent.futures
import math
import statistics
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.utils import get_class
from optuna.trial import TrialState
from tqdm.auto import tqdm

from .config import literature_loss
from .loss import PerceptualLoss
from .metrics import METRIC_DIRECTIONS
from .report import RANDOM_BANNER, format_table, save_grid
from .search_space import Infeasible, SearchSpace, SpaceError
from .tasks import build_task
from .tracking import StudyTracker, redact
from .train import NonFiniteLossError, TrainResult, resolve_device, train
from .weights import is_random

SAMPLERS = ("tpe", "random", "gp", "nsga2", "qmc", "grid")
PRUNERS = ("median", "hyperband", "none")
STORAGE_TIMEOUT_S = 30
HEARTBEAT_GRACE_S = 3600
#: Consecutive infeasible trials after which the space is judged (nearly) impossible to sample.
MAX_INFEASIBLE_IN_A_ROW = 50
#: Consecutive failed trainings (non-finite loss) after which the sweep stops instead of looping.
MAX_FAILED_IN_A_ROW = 5


class StudyError(ValueError):
    """A study that cannot be run or read: bad sampler, objective, storage; the message is one line."""


def storage_url(study_cfg: Mapping[str, Any]) -> str:
    """``study.storage``, or the default SQLite file ``studies/<name>/optuna.db``."""
    if study_cfg.get("storage"):
        return str(study_cfg["storage"])
    return f"sqlite:///studies/{study_cfg['name']}/optuna.db"


def _sqlite_path(url: str) -> Path | None:
    return Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None


def open_storage(url: str, create: bool = True) -> optuna.storages.BaseStorage:
    """An Optuna RDB storage, reached within STORAGE_TIMEOUT_S or a StudyError (password redacted).

    Heartbeats let a later sweep mark trials of a killed process as failed instead of leaving them running.
    """
    path = _sqlite_path(url)
    if path is not None:
        if not create and not path.exists():
            raise StudyError(f"no study storage at {path} (run `layersearch sweep` with the same study.name first)")
        path.parent.mkdir(parents=True, exist_ok=True)

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    def connect() -> optuna.storages.BaseStorage:
        # Heartbeats are recorded by _run_trial at every evaluation, so the grace period must exceed the
        # time between two evaluations.
        return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=HEARTBEAT_GRACE_S)

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(connect)
    try:
        return future.result(timeout=STORAGE_TIMEOUT_S)
    except concurrent.futures.TimeoutError:
        raise StudyError(f"cannot reach study storage {redact(url)} within {STORAGE_TIMEOUT_S} s") from None
    except Exception as err:
        message = " ".join(str(err).split())[:300]
        secret = _password(url)
        if secret:
            message = message.replace(secret, "***")
        raise StudyError(f"cannot open study storage {redact(url)}: {message}") from None
    finally:
        pool.shutdown(wait=False)


def _password(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password
    except ValueError:
        return None


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


def make_sampler(name: str, space: SearchSpace, n_objectives: int, seed: int, n_startup: int):
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    if name == "grid":
        try:
            return optuna.samplers.GridSampler(space.grid(), seed=seed)
        except SpaceError as err:
            raise StudyError(str(err)) from None
    raise StudyError(f"unknown study.sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")


def make_pruner(name: str, n_objectives: int, n_startup: int, n_warmup: int, trainer: Mapping[str, Any]):
    if name not in PRUNERS:
        raise StudyError(f"unknown study.pruner {name!r}; choose one of: {', '.join(PRUNERS)}")
    if name == "none":
        return optuna.pruners.NopPruner()
    if n_objectives > 1:
        if name == "hyperband":
            raise StudyError("study.pruner=hyperband needs a single objective; use median (on the first) or none")
        # Optuna cannot report intermediate values of multi-objective trials: MultiObjectiveMedian decides.
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=n_startup, n_warmup_steps=n_warmup)
    steps, every = int(trainer["steps"]), int(trainer.get("eval_every") or trainer["steps"])
    return optuna.pruners.HyperbandPruner(min_resource=every, max_resource=steps)


@dataclass
class MultiObjectiveMedian:
    """Median pruning on the first objective for multi-objective studies.

    Optuna's ``trial.report`` refuses multi-objective trials, so each evaluation is kept as a user attribute
    and compared with the median of finished trials at the same step, like ``MedianPruner``.
    """

    study: optuna.Study
    metric: str
    direction: str
    n_startup: int
    n_warmup: int
    _history: dict[int, list[float]] = field(default_factory=dict)

    def refresh(self) -> None:
        self._history = {}
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            for step, value in (t.user_attrs.get("intermediate") or {}).items():
                self._history.setdefault(int(step), []).append(float(value))

    def should_prune(self, step: int, value: float) -> bool:
        finished = len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        others = self._history.get(step, [])
        if finished < self.n_startup or step <= self.n_warmup or not others or not math.isfinite(value):
            return not math.isfinite(value)
        median = statistics.median(others)
        return value > median if self.direction == "minimize" else value < median


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
    from .loss import LossConfig

    queued = []
    for name in space.baselines:
        literature = literature_loss(name)
        literature["loss_net"]["weights"] = space.weights
        config = LossConfig.from_mapping(literature)
        try:
            params = space.params_for(config)
        except ValueError as err:
            log(f"baseline {name} does not fit the space ({err}); not enqueued")
            continue
        study.enqueue_trial(params, user_attrs={"baseline": name})
        queued.append(name)
    return queued


def run_sweep(cfg: Mapping[str, Any]) -> SweepResult:
    """Run (or resume) the study ``cfg['study']['name']`` until it has ``n_trials`` complete+pruned trials."""
    study_cfg, trainer = cfg["study"], cfg["trainer"]
    objectives = resolve_objectives(study_cfg, cfg["task"])
    space = SearchSpace.from_config(cfg["search_space"], weights=str(cfg["loss_net"]["weights"]))
    n_trials, n_startup = int(study_cfg["n_trials"]), int(study_cfg.get("n_startup_trials", 4))
    n_warmup = int(study_cfg.get("n_warmup_steps", 0))
    if n_trials < 1:
        raise StudyError(f"study.n_trials must be >= 1, got {n_trials}")
    sampler = make_sampler(str(study_cfg["sampler"]), space, len(objectives), int(study_cfg.get("seed", 0)), n_startup)
    pruner = make_pruner(str(study_cfg["pruner"]), len(objectives), n_startup, n_warmup, trainer)
    device = resolve_device(trainer["device"])
    url = storage_url(study_cfg)
    storage = open_storage(url)
    name = str(study_cfg["name"])
    random_weights = is_random(space.weights) or is_random(cfg["metrics"]["lpips"]["weights"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own console view says what happens
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, pruner=pruner,
        directions=[d for _, d in objectives], load_if_exists=True,
    )
    _check_same_study(study, objectives, cfg)
    if random_weights:
        study.set_user_attr("random_weights", True)
    log = tqdm.write
    log(f"study {name} in {redact(url)}: {len(study.trials)} trials so far, objectives "
        + ", ".join(f"{m} ({d})" for m, d in objectives))
    if random_weights:
        log(RANDOM_BANNER)
    optuna.storages.fail_stale_trials(study)
    counts = _counts(study)
    done = counts["complete"] + counts["pruned"]
    result = SweepResult(name, redact(url), counts, {}, objectives, random_weights)
    if done >= n_trials:
        log(f"study {name} already has {done} complete or pruned trials (study.n_trials={n_trials}); nothing to run")
        result.best_rows = _best_rows(study, objectives)
        return result
    if not study.trials:
        queued = enqueue_baselines(study, space, log)
        if queued:
            log(f"enqueued literature baselines first: {', '.join(queued)}")

    started = time.perf_counter()
    task = build_task(cfg["task"], cfg["data"], cfg["model"], cfg["metrics"], device)
    tracker = StudyTracker(
        str(cfg["tracking"]["uri"]), name, redact(url),
        tags={"layersearch.task": task.name, "layersearch.random_weights": str(random_weights).lower(),
              "layersearch.search_space": str(cfg["search_space"].get("name", "")),
              "layersearch.loss_net_weights": space.weights,
              "layersearch.lpips": f"{task.lpips.net}/{task.lpips.weights_label}"},
    )
    result.experiment_id = tracker.experiment_id
    multi_pruner = None
    if len(objectives) > 1 and study_cfg["pruner"] == "median":
        multi_pruner = MultiObjectiveMedian(study, objectives[0][0], objectives[0][1], n_startup, n_warmup)
    timeout = study_cfg.get("timeout")
    bar = tqdm(total=n_trials, initial=done, desc=f"sweep {name}", unit="trial", position=0)
    infeasible_in_a_row = failed_in_a_row = 0
    try:
        while done < n_trials:
            if timeout and time.perf_counter() - started > float(timeout):
                log(f"study.timeout={timeout}s reached; stopping (resume by running the same command again)")
                break
            state, seconds = _run_trial(study, space, task, cfg, objectives, tracker, multi_pruner, log)
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
            done = counts["complete"] + counts["pruned"]
            bar.update(done - bar.n)
            best = _best_summary(study, objectives)
            bar.set_postfix_str(f"done {counts['complete']} pruned {counts['pruned']} failed {counts['failed']} | {best}")
    finally:
        bar.close()
        result.seconds_total = time.perf_counter() - started
        result.counts = _counts(study)
        result.best_rows = _best_rows(study, objectives)
        if result.best_rows:
            _log_summary(study, objectives, tracker, url, random_weights)
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


def _run_trial(study, space, task, cfg, objectives, tracker, multi_pruner, log) -> tuple[str, float]:
    """One trial, told to Optuna and recorded in MLflow whatever its outcome.

    Returns:
        (state, seconds spent training and evaluating), the latter for the sweep's overhead figure.
    """
    trial = study.ask()
    # ask/tell gets no heartbeat thread (only Study.optimize starts one), so beat by hand at the start and at
    # each evaluation: a later sweep's fail_stale_trials then fails the trials of a killed process.
    study._storage.record_heartbeat(trial._trial_id)
    baseline = trial.user_attrs.get("baseline")
    metric_names = [m for m, _ in objectives]
    try:
        config = space.suggest(trial)
    except Infeasible as err:
        reason = f"infeasible: {err}"
        trial.set_user_attr("fail_reason", reason)
        tracker.start_trial(trial.number, trial.params, {}, tags={})
        tracker.end_trial("FAIL", reason=reason)
        study.tell(trial, state=TrialState.FAIL)
        return "INFEASIBLE", 0.0
    layer_config = config.to_dict()
    trial.set_user_attr("layer_config", layer_config)
    tags = {"layersearch.baseline": baseline} if baseline else {}
    tracker.start_trial(trial.number, trial.params, layer_config, tags=tags)
    if multi_pruner is not None:
        multi_pruner.refresh()
    intermediate: dict[str, float] = {}

    def report(step: int, metrics: dict[str, float]) -> None:
        study._storage.record_heartbeat(trial._trial_id)
        tracker.log_metrics(step, metrics)
        value = metrics[metric_names[0]]
        if len(objectives) == 1:
            trial.report(value, step)
            prune = trial.should_prune()
        else:
            intermediate[str(step)] = value
            trial.set_user_attr("intermediate", intermediate)
            prune = multi_pruner is not None and multi_pruner.should_prune(step, value)
        if prune:
            raise optuna.TrialPruned(f"{metric_names[0]}={value:.4f} at step {step} is worse than the median")

    timing = TrainResult(metrics={})
    label = f"trial {trial.number}" + (f" ({baseline})" if baseline else "")
    try:
        loss_fn = PerceptualLoss(config, seed=int(cfg.get("seed", 0)))
        model, run = train(task, loss_fn, cfg["trainer"], callback=report, result=timing)
        values = [run.metrics[m] for m in metric_names]
        with tempfile.TemporaryDirectory() as tmp:
            titles, rows = task.preview(model, int(cfg["trainer"].get("preview_images", 2)))
            caption = f"trial {trial.number}: {', '.join(f'{m}={v:.4f}' for m, v in zip(metric_names, values, strict=True))}"
            if tracker.random_weights:
                caption = f"{RANDOM_BANNER}\n{caption}"
            tracker.log_artifact(save_grid(Path(tmp) / "preview.png", titles, rows, caption))
        study.tell(trial, values)
        tracker.end_trial("COMPLETE", dict(zip(metric_names, values, strict=True)))
        log(f"{label}: COMPLETE " + "  ".join(f"{m}={v:.4f}" for m, v in zip(metric_names, values, strict=True)))
        return "COMPLETE", timing.train_seconds + timing.eval_seconds
    except optuna.TrialPruned as err:
        study.tell(trial, state=TrialState.PRUNED)
        tracker.end_trial("PRUNED", reason=str(err))
        log(f"{label}: PRUNED ({err})")
        return "PRUNED", timing.train_seconds + timing.eval_seconds
    except NonFiniteLossError as err:
        trial.set_user_attr("fail_reason", str(err))
        study.tell(trial, state=TrialState.FAIL)
        tracker.end_trial("FAIL", reason=str(err))
        log(f"{label}: FAIL ({err})")
        return "FAIL", timing.train_seconds + timing.eval_seconds
    except (Exception, KeyboardInterrupt) as err:
        # Anything else (a bug, Ctrl-C) is recorded, then stops the sweep; rerunning resumes it.
        reason = "interrupted" if isinstance(err, KeyboardInterrupt) else f"{type(err).__name__}: {err}"
        trial.set_user_attr("fail_reason", reason)
        study.tell(trial, state=TrialState.FAIL)
        tracker.end_trial("FAIL", reason=reason)
        raise


def _log_summary(study, objectives, tracker, url, random_weights) -> None:
    from .export import provenance_config

    names = [m for m, _ in objectives]
    best = study.best_trials if len(objectives) > 1 else [study.best_trial]
    configs = [provenance_config(study, t, names, url) for t in best]
    table = [{"trial": t.number, "baseline": t.user_attrs.get("baseline", ""),
              **dict(zip(names, t.values, strict=True))} for t in best]
    tracker.log_summary(configs, table, redact(url), extra_params={"random_weights": str(random_weights).lower()})


def format_result(result: SweepResult) -> str:
    c = result.counts
    lines = []
    if result.random_weights:
        lines.append(RANDOM_BANNER)
    lines.append(f"study {result.study_name}: {c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed "
                 f"({result.storage})")
    if result.best_rows:
        title = "Pareto front" if len(result.objectives) > 1 else "best"
        lines.append(f"{title} (and the literature baselines):")
        lines.append(format_table(result.best_rows, [m for m, _ in result.objectives]))
    if result.ran_trials and result.seconds_total > 0:
        outside = 1 - result.seconds_in_training / result.seconds_total
        lines.append(f"ran {result.ran_trials} trials in {result.seconds_total:.0f} s; "
                     f"{100 * outside:.1f}% of it outside the trials' training runs (setup, Optuna, MLflow)")
    return "\n".join(lines)
