"""`layersearch confirm`: does the short-run winner still win at a longer budget, beyond seed noise?

The study's top-k complete trials and its literature baselines are retrained from scratch for
``confirm.steps`` steps with ``confirm.seeds`` seeds each (generator init and batch order), on the same task,
data, trainer and metrics. Each (config, seed) run is a *job*.

Jobs are recorded as the trials of a second Optuna study, ``<name>.confirm``, in the study's own storage:
each job is enqueued as a fixed trial (user attrs: config key, seed, layer config) and told its scores when it
finishes. That reuses what a study already has: the storage any worker can reach (SQLite or a database URL),
heartbeats that let a later process fail the jobs of a dead one, and ``study.ask()``, which pops one queued
trial per caller. Several ``confirm`` processes therefore share the queue, and a killed one resumes where it
stopped. Two gaps of ``ask()`` are closed here:

- On SQLite, ``ask()``'s row lock (``SELECT ... FOR UPDATE``) is a no-op, so two processes could pop the
  same queued trial; every queue operation runs under the store's ``storage_lock`` (the sweep's: a file
  lock beside SQLite and journal files, an advisory lock on PostgreSQL).
- On a server database, two processes that start at once can enqueue the same missing job twice; the
  popped trial is then dropped as a duplicate unless it is the lowest-numbered live trial of its job.

A killed job is found two ways: its process is gone (same host: the pid recorded at its start no longer
runs) or its heartbeat is older than the storage's grace period (any host). It is marked failed and its
job enqueued again; a job whose training diverged (non-finite loss) is a result and is not retried.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from ..errors import LayersearchError
from ..lossnet.loss import LossConfig, PerceptualLoss
from ..lossnet.weights import any_random
from ..outputs import RANDOM_BANNER, atomic_write_json, atomic_write_text, format_table
from ..search.export import export_study, provenance_config
from ..search.space import SearchSpace
from ..search.storage import HEARTBEAT_S, heartbeat_thread, load_study, open_storage, redact, storage_lock
from ..search.study import task_metrics
from ..search.tracking import PRECISION_TAG, StudyTracker, trial_run_name
from ..trial.tasks import build_task
from ..trial.train import NonFiniteLossError, TrainResult, precision_used, resolve_device, train
from .stats import rank_correlation, verdict, welch_test

__all__ = [
    "Candidate",
    "ConfirmError",
    "ConfirmResult",
    "Settings",
    "check_study",
    "confirm_dir",
    "export_confirmed",
    "read_settings",
    "render_markdown",
    "run_confirm",
    "select_candidates",
    "summarise",
    "summary_lines",
]

SUFFIX = ".confirm"  # the jobs study of study NAME is NAME.confirm, in the same storage
CONFIRM_TAG = "layersearch.confirm"
CONFIRM_SUMMARY_TAG = "layersearch.confirm_summary"
KEY, SEED = "confirm_key", "seed"  # user attrs that name a job


class ConfirmError(LayersearchError, ValueError):
    """A confirmation that cannot run as asked (bad settings, a study that no longer composes); one line."""


# --- settings and the study's candidates --------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The confirmation's budget: which seeds, how many steps, how often to evaluate, the test's level."""

    top_k: int
    seeds: tuple[int, ...]
    steps: int
    eval_every: int
    alpha: float


def _whole(value: Any, key: str, minimum: int, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
        raise ConfirmError(f"{key} must be a whole number >= {minimum}, got {value!r}")
    if value < minimum:
        raise ConfirmError(f"{key} must be >= {minimum}{why}, got {int(value)}")
    return int(value)


def read_settings(cfg: Mapping[str, Any]) -> Settings:
    """The ``confirm`` group, checked; ``steps: null`` = 10 x ``trainer.steps``.

    ``eval_every: null`` keeps a trial's number of evaluations: ``trainer.eval_every`` scaled by
    ``steps / trainer.steps``.
    """
    conf, trainer = cfg["confirm"], cfg["trainer"]
    top_k = _whole(conf.get("top_k"), "confirm.top_k", 1)
    n_seeds = _whole(conf.get("seeds"), "confirm.seeds", 2, " (a spread over seeds needs two)")
    first = _whole(conf.get("first_seed", 0), "confirm.first_seed", 0)
    trial_steps = _whole(trainer["steps"], "trainer.steps", 1)
    steps = 10 * trial_steps if conf.get("steps") is None else _whole(conf["steps"], "confirm.steps", 1)
    if conf.get("eval_every") is None:
        trial_every = int(trainer.get("eval_every") or trial_steps)
        eval_every = max(1, round(steps * trial_every / trial_steps))
    else:
        eval_every = _whole(conf["eval_every"], "confirm.eval_every", 1)
    alpha = conf.get("alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ConfirmError(f"confirm.alpha must be a number between 0 and 1, got {alpha!r}")
    return Settings(top_k, tuple(range(first, first + n_seeds)), steps, eval_every, float(alpha))


@dataclass(frozen=True)
class Candidate:
    """One config to retrain: a top trial or a literature baseline of the study."""

    key: str  # "trial_<n>"
    trial: int
    baseline: str | None
    label: str  # "#12 relu2_2+relu4_3", "#0 johnson_sr"
    layer_config: dict[str, Any]
    short_run: dict[str, float]  # the study's values for this trial, by objective


def check_study(study: optuna.Study, cfg: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The study's ``[(objective, direction)]``, after checking it still composes with ``cfg``.

    The composed config must name the study's task and search space, the space must still parse, the task
    must still report every objective, and the weights must be as random (or not) as the sweep's.
    """
    attrs, name = study.user_attrs, study.study_name
    names = attrs.get("objectives")
    if not names:
        raise ConfirmError(f"study {name!r} has no recorded objectives; was it made by `layersearch sweep`?")
    target = str(cfg["task"]["_target_"])
    if attrs.get("task") and attrs["task"] != target:
        raise ConfirmError(f"study {name!r} was run with task {attrs['task']}, but this config composes {target}; "
                           "pass the overrides the sweep ran with")
    space_name = str(cfg["search_space"].get("name", ""))
    if attrs.get("search_space") not in (None, space_name):
        raise ConfirmError(f"study {name!r} was run with search_space={attrs['search_space']}, not {space_name}; "
                           "pass the overrides the sweep ran with")
    if "search_space_config" in attrs:
        try:
            SearchSpace.from_config(attrs["search_space_config"], weights=str(cfg["loss_net"]["weights"]))
        except LayersearchError as err:
            raise ConfirmError(f"the search space of study {name!r} no longer composes: {err}") from None
    available, _ = task_metrics(cfg["task"])
    missing = [m for m in names if m not in available]
    if missing:
        raise ConfirmError(f"the task no longer reports objective(s) {', '.join(missing)} of study {name!r}; "
                           f"it reports {', '.join(available)}")
    directions = ["minimize" if d == optuna.study.StudyDirection.MINIMIZE else "maximize" for d in study.directions]
    return list(zip(names, directions, strict=True))


def select_candidates(study: optuna.Study, objectives: Sequence[tuple[str, str]], top_k: int) -> list[Candidate]:
    """The top ``top_k`` complete trials, then every complete literature baseline not already among them.

    One objective: by its value. Several: the Pareto front first, then the rest, each part ordered by the
    first (primary) objective; ties go to the earlier trial.
    """
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "layer_config" in t.user_attrs]
    if not complete:
        raise ConfirmError(f"study {study.study_name!r} has no complete trial yet; run `layersearch sweep` first")
    sign = 1 if objectives[0][1] == "minimize" else -1
    ranked = sorted(complete, key=lambda t: (sign * t.values[0], t.number))
    if len(objectives) > 1:
        front = {t.number for t in study.best_trials}
        ranked = [t for t in ranked if t.number in front] + [t for t in ranked if t.number not in front]
    chosen = ranked[:top_k]
    numbers = {t.number for t in chosen}
    chosen += [t for t in sorted(complete, key=lambda t: t.number) if t.user_attrs.get("baseline") and t.number not in numbers]
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
                                    layer_config, dict(zip(names, t.values, strict=True))))
    return candidates


def _random_weights(candidates: Sequence[Candidate], cfg: Mapping[str, Any]) -> bool:
    # The sweep's rule: the space's loss-network weights (recorded in every layer config) or the LPIPS backbone.
    loss_weights = [str(c.layer_config["loss_net"]["weights"]) for c in candidates]
    return any_random(*loss_weights, str(cfg["metrics"]["lpips"]["weights"]))


# --- the job queue: the trials of NAME.confirm ----------------------------------------------------------


def _job(trial: FrozenTrial | optuna.Trial) -> tuple[str, int] | None:
    attrs = trial.user_attrs
    return (attrs[KEY], int(attrs[SEED])) if KEY in attrs and SEED in attrs else None


def _settled(trial: FrozenTrial) -> bool:
    """Queued, running, done, or diverged (a result, not retried)."""
    return trial.state in (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE) or bool(
        trial.user_attrs.get("nonfinite"))


def _process_gone(attrs: Mapping[str, Any]) -> bool:
    """The job's process ran on this host and no longer does (a zombie counts as gone)."""
    if attrs.get("host") != socket.gethostname() or not isinstance(attrs.get("pid"), int):
        return False
    pid = attrs["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _fail_abandoned(jobs: optuna.Study, log) -> None:
    """Fail the running jobs of dead processes (heartbeat too old, or gone from this host)."""
    optuna.storages.fail_stale_trials(jobs)
    for t in jobs.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _process_gone(t.user_attrs):
            try:
                jobs.tell(t.number, state=TrialState.FAIL)
            except (optuna.exceptions.UpdateFinishedTrialError, ValueError, RuntimeError):
                continue  # finished or failed by another process meanwhile
            log(f"job {t.user_attrs.get('label')} seed {t.user_attrs.get(SEED)} was left by a process that is gone "
                f"(pid {t.user_attrs['pid']}); it runs again")


def _check_budget(jobs: optuna.Study, settings: Settings, trainer: Mapping[str, Any], url: str) -> None:
    """A confirmation keeps its budget: results at different steps or batch sizes must not be averaged."""
    budget = {"steps": settings.steps, "batch_size": int(trainer["batch_size"]), "lr": float(trainer["lr"])}
    recorded = jobs.user_attrs.get("budget")
    if recorded is None:
        jobs.set_user_attr("budget", budget)
    elif recorded != budget:
        changed = ", ".join(f"{k}={recorded[k]} (now {budget[k]})" for k in budget if recorded.get(k) != budget[k])
        raise ConfirmError(f"{jobs.study_name} was run with {changed}; rerun with those, or start over with "
                           f"`optuna delete-study --study-name {jobs.study_name} --storage {redact(url)}`")


def _enqueue_missing(jobs: optuna.Study, candidates: Sequence[Candidate], settings: Settings) -> int:
    """Queue every (config, seed) job that has no live, finished or diverged trial; return how many."""
    settled = {_job(t) for t in jobs.get_trials(deepcopy=False) if _settled(t)}
    queued = 0
    for c in candidates:
        for seed in settings.seeds:
            if (c.key, seed) not in settled:
                jobs.enqueue_trial({}, user_attrs={KEY: c.key, SEED: seed, "trial": c.trial, "baseline": c.baseline,
                                                   "label": c.label, "layer_config": c.layer_config},
                                   skip_if_exists=False)
                queued += 1
    return queued


def _duplicate_of(jobs: optuna.Study, trial: optuna.Trial, job: tuple[str, int]) -> int | None:
    for t in jobs.get_trials(deepcopy=False):
        if t.number == trial.number or _job(t) != job:
            continue
        if t.state == TrialState.COMPLETE or t.user_attrs.get("nonfinite") or (
                t.state in (TrialState.WAITING, TrialState.RUNNING) and t.number < trial.number):
            return t.number
    return None


def _claim(jobs: optuna.Study, url: str) -> optuna.Trial | None:
    """Pop the next queued job for this process (or None when the queue is empty)."""
    with storage_lock(url):
        while jobs.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            trial = jobs.ask()
            job = _job(trial)
            if job is None:
                # Another process took the last queued job between our look and our ask (server storages):
                # ask() then makes a fresh trial, which is not a job.
                trial.set_user_attr("fail_reason", "no queued job left: another process took it")
                jobs.tell(trial, state=TrialState.FAIL)
                return None
            duplicate = _duplicate_of(jobs, trial, job)
            if duplicate is not None:
                trial.set_user_attr("fail_reason", f"duplicate of trial {duplicate}")
                jobs.tell(trial, state=TrialState.FAIL)
                continue
            trial.set_user_attr("host", socket.gethostname())
            trial.set_user_attr("pid", os.getpid())
            return trial
    return None


# --- MLflow, never at the expense of the Optuna record ------------------------------------------------


class _Tracking:
    """The confirm runs in the study's MLflow experiment, opened at the first call. The first MLflow error warns
    in one line and turns tracking off for the rest of the process: the results live in Optuna and confirm.json."""

    def __init__(self, cfg: Mapping[str, Any], study_name: str, url: str, random_weights: bool):
        self.tracker: StudyTracker | None = None
        self.failed = False
        self._open = lambda: StudyTracker(str(cfg["tracking"]["uri"]), study_name, redact(url),
                                          tags={"layersearch.random_weights": str(random_weights).lower()})

    def __call__(self, method: str, *args: Any, **kwargs: Any) -> None:
        if self.failed:
            return
        try:
            if self.tracker is None:
                self.tracker = self._open()
            getattr(self.tracker, method)(*args, **kwargs)
        except Exception as err:
            self.failed = True
            message = " ".join(str(err).split())[:200]
            warnings.warn(f"MLflow: {type(err).__name__}: {message}; confirm results are still recorded in Optuna "
                          "and confirm.json, not in MLflow", stacklevel=2)


# --- one job ----------------------------------------------------------------------------------------------


@dataclass
class _Context:
    task: Any
    cfg: Mapping[str, Any]
    settings: Settings
    objectives: list[tuple[str, str]]
    tracking: _Tracking
    log: Any


def _run_job(jobs: optuna.Study, trial: optuna.Trial, ctx: _Context) -> tuple[str, float]:
    """Train one (config, seed), tell Optuna, then MLflow; returns (state, seconds)."""
    attrs = trial.user_attrs
    seed, names = int(attrs[SEED]), [m for m, _ in ctx.objectives]
    trainer = {**ctx.cfg["trainer"], "steps": ctx.settings.steps, "eval_every": ctx.settings.eval_every, "seed": seed}
    number = attrs["label"].split(" ", 1)[0]
    ctx.tracking("start_run", f"confirm {number} seed {seed}",
                 {CONFIRM_TAG: "true", "layersearch.confirm_of": str(attrs["trial"]), "layersearch.seed": str(seed),
                  PRECISION_TAG: precision_used(trainer, ctx.task.device),
                  **({"layersearch.baseline": attrs["baseline"]} if attrs.get("baseline") else {})},
                 params={"seed": seed, "steps": ctx.settings.steps, "trial": attrs["trial"], "label": attrs["label"]},
                 layer_config=attrs["layer_config"])
    curve: list[list[Any]] = []

    def report(step: int, metrics: dict[str, float]) -> None:
        ctx.tracking("log_metrics", step, metrics)
        curve.append([step, {m: metrics[m] for m in names}])
        trial.set_user_attr("curve", curve)

    timing = TrainResult(metrics={})
    with heartbeat_thread(jobs, trial, HEARTBEAT_S):
        try:
            loss_fn = PerceptualLoss(LossConfig.from_mapping(attrs["layer_config"]), seed=int(ctx.cfg.get("seed", 0)))
            _, run = train(ctx.task, loss_fn, trainer, callback=report, result=timing)
        except NonFiniteLossError as err:
            trial.set_user_attr("fail_reason", str(err))
            trial.set_user_attr("nonfinite", True)  # a result of this config: not retried
            jobs.tell(trial, state=TrialState.FAIL)
            ctx.tracking("end_trial", "FAIL", reason=str(err))
            ctx.log(f"{attrs['label']} seed {seed}: FAIL ({err})")
            return "FAIL", timing.train_seconds + timing.eval_seconds
        except (Exception, KeyboardInterrupt) as err:
            # A bug or Ctrl-C: recorded, then it stops confirm; the next run queues this job again.
            reason = "interrupted" if isinstance(err, KeyboardInterrupt) else f"{type(err).__name__}: {err}"
            trial.set_user_attr("fail_reason", reason)
            jobs.tell(trial, state=TrialState.FAIL)
            ctx.tracking("end_trial", "FAIL", reason=reason)
            raise
    seconds = timing.train_seconds + timing.eval_seconds
    values = {m: run.metrics[m] for m in names}
    trial.set_user_attr("metrics", {k: v for k, v in run.metrics.items() if not k.startswith("train/")})
    trial.set_user_attr("seconds", seconds)
    try:
        jobs.tell(trial, list(values.values()))
    except optuna.exceptions.UpdateFinishedTrialError:
        ctx.log(f"{attrs['label']} seed {seed}: another process had failed this job as stale and queued it again")
        return "TAKEN", seconds
    ctx.tracking("end_trial", "COMPLETE", values)
    ctx.log(f"{attrs['label']} seed {seed}: " + "  ".join(f"{m}={v:.4f}" for m, v in values.items())
            + f"  ({seconds:.0f} s)")
    return "COMPLETE", seconds


# --- the summary: statistics over seeds -------------------------------------------------------------------


def summarise(study_name: str, random_weights: bool, settings: Settings, objectives: Sequence[tuple[str, str]],
              candidates: Sequence[Candidate], per_seed: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """confirm.json: per config mean and std over seeds, the long-run rank, rank agreement, verdicts.

    Args:
        per_seed: config key -> one row per finished seed, ``{"seed": s, <metric>: value, ...}``; seeds whose
            training diverged carry ``"failed": reason`` instead of values.
    """
    names = [m for m, _ in objectives]
    primary, lower = names[0], objectives[0][1] == "minimize"
    configs = []
    for c in candidates:
        rows = [r for r in per_seed.get(c.key, []) if "failed" not in r]
        values = {m: [float(r[m]) for r in rows] for m in names}
        configs.append({
            "key": c.key, "trial": c.trial, "baseline": c.baseline, "label": c.label, "layer_config": c.layer_config,
            "short_run": c.short_run,
            "mean": {m: statistics.fmean(v) for m, v in values.items() if v},
            "std": {m: statistics.stdev(v) for m, v in values.items() if len(v) > 1},
            "n_seeds": len(rows), "long_rank": None, "per_seed": list(per_seed.get(c.key, [])),
        })
    scored = sorted((c for c in configs if primary in c["mean"]),
                    key=lambda c: c["mean"][primary] if lower else -c["mean"][primary])
    for rank, c in enumerate(scored, 1):
        c["long_rank"] = rank
    paired = [c for c in configs if primary in c["mean"] and primary in c["short_run"]]
    correlation = rank_correlation([c["short_run"][primary] for c in paired], [c["mean"][primary] for c in paired])
    short_best = min((c for c in configs if primary in c["short_run"]), default=None,
                     key=lambda c: c["short_run"][primary] if lower else -c["short_run"][primary])
    winner = scored[0] if scored else None
    comparisons = []
    for base in configs:
        if winner is None or not base["baseline"] or base is winner or not base["n_seeds"]:
            continue
        for metric, direction in objectives:
            ours = [float(r[metric]) for r in winner["per_seed"] if "failed" not in r]
            theirs = [float(r[metric]) for r in base["per_seed"] if "failed" not in r]
            test = welch_test(ours, theirs, confidence=1 - settings.alpha)
            comparisons.append({
                "winner": winner["key"], "baseline": base["baseline"], "baseline_key": base["key"], "metric": metric,
                "difference": test.difference, "better_if": "lower" if direction == "minimize" else "higher",
                "ci_low": test.ci_low, "ci_high": test.ci_high, "p_value": test.p_value, "test": "welch_t",
                "alpha": settings.alpha,
                "verdict": verdict(test, direction == "minimize", settings.alpha),
            })
    return {
        "study": study_name, "random_weights": bool(random_weights), "steps": settings.steps,
        "seeds": list(settings.seeds), "primary": primary, "objectives": [[m, d] for m, d in objectives],
        "eval_every": settings.eval_every,
        "configs": configs,
        "rank_correlation": {"spearman": correlation.spearman, "kendall": correlation.kendall, "n": correlation.n},
        "winner": winner["key"] if winner else None,
        "short_run_winner": short_best["key"] if short_best else None,
        "comparisons": comparisons,
        "test_description": f"Welch's two-sided t-test over seeds (scipy.stats.ttest_ind, equal_var=False) at alpha "
                f"{settings.alpha:g}, {100 * (1 - settings.alpha):g}% confidence interval of winner minus baseline",
    }


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def render_markdown(summary: Mapping[str, Any]) -> str:
    """confirm.md: the same facts as confirm.json, for people."""
    names = [m for m, _ in summary["objectives"]]
    primary, by_key = summary["primary"], {c["key"]: c for c in summary["configs"]}
    lines = [f"# Confirmation of study {summary['study']}", ""]
    if summary["random_weights"]:
        lines += [f"**{RANDOM_BANNER}**", ""]
    lines += [f"Each config retrained from scratch for {summary['steps']} steps with seeds "
              f"{', '.join(map(str, summary['seeds']))} (generator init and batch order); validation scores at the "
              "end, mean ± std over seeds.", ""]
    header = ["config", f"short run {primary}", *[f"{m} (mean ± std)" for m in names], "seeds", "long-run rank"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in sorted(summary["configs"], key=lambda c: (c["long_rank"] is None, c["long_rank"] or 0)):
        cells = [c["label"], _number(c["short_run"].get(primary))]
        cells += [f"{_number(c['mean'].get(m))} ± {_number(c['std'].get(m), 2)}" for m in names]
        cells += [str(c["n_seeds"]), str(c["long_rank"] or "-")]
        lines.append("| " + " | ".join(cells) + " |")
    rc = summary["rank_correlation"]
    lines += ["", f"Agreement of the short-run and long-run rankings by {primary} over {rc['n']} configs: "
              f"Spearman ρ = {_number(rc['spearman'], 3)}, Kendall τ = {_number(rc['kendall'], 3)}."]
    winner = by_key.get(summary["winner"])
    if winner:
        short = by_key.get(summary.get("short_run_winner"))
        holds = "it holds" if short is winner else f"the short-run winner was {short['label']}" if short else ""
        lines += ["", f"**Winner at {summary['steps']} steps: {winner['label']}**" + (f" ({holds})." if holds else ".")]
    if summary["comparisons"]:
        lines += ["", f"Winner minus baseline, {summary['test_description']}:", "",
                  "| baseline | metric | difference | better if | CI | p | verdict |", "|---|---|---|---|---|---|---|"]
        for cmp in summary["comparisons"]:
            ci = "n/a" if cmp["ci_low"] is None else f"[{_number(cmp['ci_low'])}, {_number(cmp['ci_high'])}]"
            lines.append(f"| {by_key[cmp['baseline_key']]['label']} | {cmp['metric']} | {_number(cmp['difference'])} | "
                         f"{cmp['better_if']} | {ci} | {_number(cmp['p_value'], 3)} | {cmp['verdict']} |")
    failed = [(c["label"], r) for c in summary["configs"] for r in c["per_seed"] if "failed" in r]
    if failed:
        lines += ["", "Diverged runs (left out of the means): "
                  + "; ".join(f"{name} seed {r['seed']}: {r['failed']}" for name, r in failed)]
    return "\n".join(lines) + "\n"


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """What the CLI prints: the table, the rank agreement, the winner, the verdicts."""
    names, primary = [m for m, _ in summary["objectives"]], summary["primary"]
    ranked = sorted(summary["configs"], key=lambda c: (c["long_rank"] is None, c["long_rank"] or 0))
    rows = {f"{c['label']} (short {_number(c['short_run'].get(primary))})": c["mean"] for c in ranked}
    lines = [RANDOM_BANNER] if summary["random_weights"] else []
    lines += [f"mean over {len(summary['seeds'])} seeds at {summary['steps']} steps:", format_table(rows, names)]
    rc = summary["rank_correlation"]
    lines.append(f"short vs long ranking by {primary} ({rc['n']} configs): Spearman {_number(rc['spearman'], 3)}, "
                 f"Kendall {_number(rc['kendall'], 3)}")
    by_key = {c["key"]: c for c in summary["configs"]}
    if summary["winner"]:
        lines.append(f"winner: {by_key[summary['winner']]['label']}")
    lines += [f"  vs {by_key[c['baseline_key']]['label']} on {c['metric']}: {c['difference']:+.4g} "
              f"(p={_number(c['p_value'], 3)}): {c['verdict']}" for c in summary["comparisons"]]
    return lines


# --- the command ----------------------------------------------------------------------------------------------


def confirm_dir(cfg: Mapping[str, Any]) -> Path:
    """``<paths.studies_dir>/<study.name>/confirm``: where confirm.json and confirm.md go."""
    return Path(cfg["paths"]["studies_dir"]) / str(cfg["study"]["name"]) / "confirm"


@dataclass
class ConfirmResult:
    study: str
    jobs: int
    ran: int = 0
    pending: int = 0  # jobs still queued or running in other processes when this one stopped
    summary: dict[str, Any] | None = None
    paths: list[Path] = field(default_factory=list)


def _per_seed(jobs: optuna.Study, names: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, dict[int, dict[str, Any]]] = {}
    for t in jobs.get_trials(deepcopy=False):
        job = _job(t)
        if job is None or job[1] in rows.get(job[0], {}):
            continue
        if t.state == TrialState.COMPLETE:
            metrics = {**t.user_attrs.get("metrics", {}), **dict(zip(names, t.values, strict=True))}
            rows.setdefault(job[0], {})[job[1]] = {"seed": job[1], **metrics, "curve": t.user_attrs.get("curve", [])}
        elif t.user_attrs.get("nonfinite"):
            rows.setdefault(job[0], {})[job[1]] = {"seed": job[1], "failed": t.user_attrs.get("fail_reason", "")}
    return {key: [by_seed[s] for s in sorted(by_seed)] for key, by_seed in rows.items()}


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _cost_line(name: str, candidates: Sequence[Candidate], settings: Settings, done: int, trial_steps: int,
               n_trials: int) -> str:
    n_top = min(settings.top_k, len(candidates))
    n_jobs = len(candidates) * len(settings.seeds)
    total = n_jobs * settings.steps
    return (f"confirm {name}: {len(candidates)} configs (top {n_top} + {len(candidates) - n_top} more baselines) "
            f"x {len(settings.seeds)} seeds x {settings.steps} steps = {n_jobs} runs, {total:,} training steps "
            f"({total / max(1, n_trials * trial_steps):.1f}x the sweep's {n_trials} trials x {trial_steps} steps); "
            f"{done} runs already done")


def run_confirm(cfg: Mapping[str, Any]) -> ConfirmResult:
    """Retrain the top configs and baselines of ``study.name`` over seeds; write confirm.json and confirm.md.

    Resumable and shareable: run it again after a kill, or in several processes at once (see the module
    docstring). The outputs are written by the process that finds every job finished.
    """
    settings = read_settings(cfg)
    study, url = load_study(cfg["study"], cfg["paths"]["studies_dir"])
    objectives = check_study(study, cfg)
    candidates = select_candidates(study, objectives, settings.top_k)
    random_weights = _random_weights(candidates, cfg)
    if random_weights != bool(study.user_attrs.get("random_weights")):
        was = "random" if study.user_attrs.get("random_weights") else "pretrained"
        raise ConfirmError(f"study {study.study_name!r} was scored with {was} weights, this config would not be; "
                           "pass the overrides the sweep ran with (e.g. preset=smoke)")
    log = tqdm.write
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    names = [m for m, _ in objectives]
    jobs_name = study.study_name + SUFFIX
    storage = open_storage(url)
    with storage_lock(url):
        jobs = optuna.create_study(study_name=jobs_name, storage=storage,
                                   directions=[d for _, d in objectives], load_if_exists=True)
        _check_budget(jobs, settings, cfg["trainer"], url)
        jobs.set_user_attr("objectives", names)
        _fail_abandoned(jobs, log)
        _enqueue_missing(jobs, candidates, settings)
    wanted = {(c.key, s) for c in candidates for s in settings.seeds}
    done = sum(1 for t in jobs.get_trials(deepcopy=False) if _job(t) in wanted and t.state == TrialState.COMPLETE)
    complete_trials = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    if random_weights:
        log(RANDOM_BANNER)
    log(_cost_line(study.study_name, candidates, settings, done, int(cfg["trainer"]["steps"]), complete_trials))
    result = ConfirmResult(study.study_name, len(wanted))

    def queued() -> int:
        return len(jobs.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    tracking = _Tracking(cfg, study.study_name, url, random_weights)
    if queued():
        # Built once per process, only when there is work, and before a job is claimed: a task that cannot be
        # built (weights offline, a missing data folder) must not leave a claimed job behind.
        task = build_task(cfg["task"], cfg["data"], cfg["model"], cfg["metrics"], resolve_device(cfg["trainer"]["device"]))
        ctx = _Context(task, cfg, settings, objectives, tracking, log)
        bar = tqdm(total=queued(), desc=f"confirm {study.study_name}", unit="run", position=0)
        try:
            while (trial := _claim(jobs, url)) is not None:
                started = time.perf_counter()
                _run_job(jobs, trial, ctx)
                result.ran += 1
                left = queued()
                if result.ran == 1 and left:
                    each = time.perf_counter() - started
                    log(f"first run took {_duration(each)}; about {_duration(each * left)} for the {left} runs "
                        "still queued (less with more confirm processes)")
                bar.total = bar.n + 1 + left
                bar.update(1)
        finally:
            bar.close()
    live = [t for t in jobs.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)) if _job(t) in wanted]
    result.pending = len(live)
    if live:
        log(f"{len(live)} runs are still queued or running in other processes; the last to finish writes the results "
            "(or run this command again)")
        return result
    result.summary = summarise(study.study_name, random_weights, settings, objectives, candidates, _per_seed(jobs, names))
    out = confirm_dir(cfg)
    result.paths = [atomic_write_text(out / "confirm.md", render_markdown(result.summary)),
                    atomic_write_json(out / "confirm.json", result.summary)]
    _log_summary(tracking, result)
    return result


def _log_summary(tracking: _Tracking, result: ConfirmResult) -> None:
    summary = result.summary
    winner = next((c for c in summary["configs"] if c["key"] == summary["winner"]), None)
    tracking("start_run", "confirm summary", {CONFIRM_TAG: "true", CONFIRM_SUMMARY_TAG: "true"},
             params={"steps": summary["steps"], "seeds": summary["seeds"], "winner": winner["label"] if winner else ""},
             layer_config=winner["layer_config"] if winner else None, replace=True)
    for path in result.paths:
        tracking("log_artifact", path)
    rc = summary["rank_correlation"]
    metrics = {f"winner_{m}": v for m, v in (winner or {}).get("mean", {}).items()}
    metrics.update({f"rank_{k}": rc[k] for k in ("spearman", "kendall") if rc[k] is not None})
    tracking("end_trial", "COMPLETE", metrics)


# --- export.source=confirm --------------------------------------------------------------------------------


def export_confirmed(cfg: Mapping[str, Any]) -> list[Path]:
    """`layersearch export export.source=confirm`: write the confirmation's winner, provenance saying so."""
    path = confirm_dir(cfg) / "confirm.json"
    name = str(cfg["study"]["name"])
    if not path.is_file():
        raise ConfirmError(f"study {name!r} has no finished confirmation ({path} is missing); "
                           f"run `layersearch confirm study.name={name}` first")
    summary = json.loads(path.read_text())
    winner = next((c for c in summary["configs"] if c["key"] == summary.get("winner")), None)
    if winner is None:
        raise ConfirmError(f"the confirmation of study {name!r} has no winner (every run diverged?); see {path}")
    study, url = load_study(cfg["study"], cfg["paths"]["studies_dir"])
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == winner["trial"]), None)
    if trial is None or trial.state != TrialState.COMPLETE:
        raise ConfirmError(f"trial {winner['trial']} of study {name!r} named by {path} is not a complete trial")
    config = provenance_config(study, trial, list(study.user_attrs["objectives"]), url)
    config["provenance"]["source"] = "confirm"
    config["provenance"]["random_weights"] = bool(config["provenance"]["random_weights"] or summary["random_weights"])
    config["provenance"]["confirm"] = {
        "file": str(path), "steps": summary["steps"], "seeds": summary["seeds"], "n_seeds": winner["n_seeds"],
        "mean": winner["mean"], "std": winner["std"], "long_rank": winner["long_rank"],
        "verdicts": {f"{c['baseline']}/{c['metric']}": c["verdict"] for c in summary["comparisons"]},
    }
    return export_study(cfg, chosen=config)
