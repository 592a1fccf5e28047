"""`layersearch confirm`: does the short-run winner still win at a longer budget, beyond seed noise?

The study's top-k complete trials and its literature baselines are raced: retrained from scratch for
``confirm.steps`` steps, seed round by seed round (generator init and batch order; the same seeds for every
config), on the same task, data, trainer and metrics. After each round the race (race.py) drops the configs
worse than the best; only those still in train the next seed. Each (config, seed) run is a *job*; a finished
round queues the next one (`advance`), so the queue holds one round at a time, or the rounds before the first
possible test together.

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
job enqueued again; a job whose training failed by itself (a non-finite loss, the user's code failing) is a
result and is not retried.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ...outputs import RANDOM_BANNER, atomic_write_json, atomic_write_text
from ...progress import progress, write
from ...search.results import export_study, provenance_config
from ...search.storage import load_study, open_storage, storage_lock
from ...settings import Settings
from ...trial.kinds import lpips_used, make_training
from ...trial.train import resolve_device
from .job import CONFIRM_SUMMARY_TAG, CONFIRM_TAG, JobContext, JobTracking, run_job
from .plan import (
    Candidate,
    ConfirmError,
    ConfirmPlan,
    check_study,
    random_weights_of,
    read_plan,
    select_candidates,
)
from .queue import SUFFIX, check_budget, claim, enqueue_missing, fail_abandoned, job_of, per_seed
from .race import RaceState, rounds_to_queue
from .summary import race_of, render_markdown, summarise

__all__ = ["ConfirmResult", "confirm_dir", "export_confirmed", "run_confirm"]

# --- the command ----------------------------------------------------------------------------------------------


def confirm_dir(settings: Settings) -> Path:
    """``<paths.studies_dir>/<study.name>/confirm``: where confirm.json and confirm.md go."""
    return Path(settings.paths.studies_dir) / settings.study.name / "confirm"


@dataclass
class ConfirmResult:
    study: str
    jobs: int
    ran: int = 0
    pending: int = 0  # jobs still queued or running in other processes when this one stopped
    summary: dict[str, Any] | None = None
    paths: list[Path] = field(default_factory=list)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _cost_line(name: str, candidates: Sequence[Candidate], plan: ConfirmPlan, done: int, trial_steps: int,
               n_trials: int) -> str:
    n_top = min(plan.top_k, len(candidates))
    n_jobs = len(candidates) * len(plan.seeds)
    total = n_jobs * plan.steps
    return (f"confirm {name}: {len(candidates)} configs (top {n_top} + {len(candidates) - n_top} more baselines) "
            f"x {len(plan.seeds)} seeds x {plan.steps} steps = at most {n_jobs} runs (the race drops configs worse "
            f"than the best), {total:,} training steps "
            f"({total / max(1, n_trials * trial_steps):.1f}x the sweep's {n_trials} trials x {trial_steps} steps); "
            f"{done} runs already done")


def run_confirm(settings: Settings) -> ConfirmResult:
    """Retrain the top configs and baselines of ``study.name`` over seeds; write confirm.json and confirm.md.

    Resumable and shareable: run it again after a kill, or in several processes at once (see the module
    docstring). The outputs are written by the process that finds every job finished.
    """
    plan = read_plan(settings)
    study, url = load_study(settings.study, settings.paths.studies_dir)
    log = write
    # The runs evaluate as often as the plan says (a trial's number of evaluations, by default).
    run_settings = dataclasses.replace(settings, trainer=dataclasses.replace(settings.trainer, eval_every=plan.eval_every))
    training = make_training(run_settings, log)
    objectives = check_study(study, settings, training)
    candidates = select_candidates(study, objectives, plan.top_k)
    lpips = settings.metrics.lpips if lpips_used(settings, [m for m, _ in objectives]) else None
    random_weights = random_weights_of(candidates, lpips)
    if random_weights != bool(study.user_attrs.get("random_weights")):
        was = "random" if study.user_attrs.get("random_weights") else "pretrained"
        raise ConfirmError(f"study {study.study_name!r} was scored with {was} weights, this config would not be; "
                           "pass the overrides the sweep ran with (e.g. preset=smoke)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    names = [m for m, _ in objectives]
    jobs_name = study.study_name + SUFFIX
    storage = open_storage(url, heartbeat_s=settings.study.heartbeat_s, grace_s=settings.study.grace_s,
                           retry_s=settings.study.db_retry_s)
    with storage_lock(url):
        jobs = optuna.create_study(study_name=jobs_name, storage=storage,
                                   directions=[d for _, d in objectives], load_if_exists=True)
        check_budget(jobs, plan, settings.trainer, url)
        jobs.set_user_attr("objectives", names)
        fail_abandoned(jobs, log)
    state = advance(jobs, url, plan, objectives, candidates)
    keys = {c.key for c in candidates}

    def ours(t: optuna.trial.FrozenTrial) -> bool:
        job = job_of(t)
        return job is not None and job[0] in keys and job[1] in plan.seeds

    done = sum(1 for t in jobs.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if ours(t))
    complete_trials = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    if random_weights:
        log(RANDOM_BANNER)
    log(_cost_line(study.study_name, candidates, plan, done, settings.trainer.steps, complete_trials))
    result = ConfirmResult(study.study_name, len(candidates) * len(plan.seeds))

    def queued() -> int:
        return len(jobs.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    tracking = JobTracking(settings.tracking.uri, study.study_name, url, random_weights)
    if queued():
        # Prepared once per process, only when there is work, and before a job is claimed: a training that
        # cannot start (weights offline, a missing data folder, a command not found) must not leave a claimed
        # job behind.
        training.prepare()
        builtin = training.kind == "builtin"
        ctx = JobContext(training, run_settings, study.study_name, plan, objectives, tracking,
                         training.device if builtin else resolve_device(settings.trainer.device), log,
                         training.precision() if builtin else None)
        # One plain line per finished run when the output is a log file, not a terminal.
        bar = progress(queued(), f"confirm {study.study_name}", "run", position=0, every_s=0)
        try:
            while (trial := claim(jobs, url)) is not None:
                started = time.perf_counter()
                run_job(jobs, trial, ctx)
                result.ran += 1
                # A finished round lets the race drop configs and queue the next seeds of those still in.
                state = advance(jobs, url, plan, objectives, candidates)
                left = queued()
                if result.ran == 1 and left:
                    each = time.perf_counter() - started
                    log(f"first run took {_duration(each)}; about {_duration(each * left)} for the {left} runs "
                        "queued now (less with more confirm processes; the race may queue more seeds)")
                bar.total = bar.n + 1 + left
                bar.update(1)
        finally:
            bar.close()
    live = [t for t in jobs.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)) if ours(t)]
    result.pending = len(live)
    if live or not state.finished:
        log(f"{len(live)} runs are still queued or running in other processes; the last to finish writes the results "
            "(or run this command again)")
        return result
    result.summary = summarise(study.study_name, random_weights, plan, objectives, candidates,
                               _rows_of(per_seed(jobs, names), plan))
    out = confirm_dir(settings)
    result.paths = [atomic_write_text(out / "confirm.md", render_markdown(result.summary)),
                    atomic_write_json(out / "confirm.json", result.summary)]
    _log_summary(tracking, result)
    return result


def _rows_of(rows: dict[str, list[dict[str, Any]]], plan: ConfirmPlan) -> dict[str, list[dict[str, Any]]]:
    """The rows of this plan's seeds (an earlier confirmation may have run more)."""
    return {key: [r for r in by_seed if r["seed"] in plan.seeds] for key, by_seed in rows.items()}


def advance(jobs: optuna.Study, url: str, plan: ConfirmPlan, objectives: Sequence[tuple[str, str]],
            candidates: Sequence[Candidate]) -> RaceState:
    """Replay the race on the finished runs and queue the seeds the configs still in it need next.

    Under the storage lock, so two processes finishing a round at once queue its next seed once. Every process
    replays the same stored results in seed order, so they agree on who is still in the race.
    """
    with storage_lock(url):
        rows = _rows_of(per_seed(jobs, [m for m, _ in objectives]), plan)
        state, _ = race_of(plan, objectives, candidates, rows)
        rounds = rounds_to_queue(state, len(plan.seeds), plan.first_test, any(rows.values()))
        alive = [c for c in candidates if c.key in state.alive]
        enqueue_missing(jobs, alive, [plan.seeds[r] for r in rounds])
    return state


def _log_summary(tracking: JobTracking, result: ConfirmResult) -> None:
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


def export_confirmed(settings: Settings) -> list[Path]:
    """`layersearch export export.source=confirm`: write the confirmation's winner, provenance saying so."""
    path = confirm_dir(settings) / "confirm.json"
    name = settings.study.name
    if not path.is_file():
        raise ConfirmError(f"study {name!r} has no finished confirmation ({path} is missing); "
                           f"run `layersearch confirm study.name={name}` first")
    summary = json.loads(path.read_text())
    if "race" not in summary:
        raise ConfirmError(f"{path} was written before confirm raced its configs; run "
                           f"`layersearch confirm study.name={name}` again to rewrite it")
    winner = next((c for c in summary["configs"] if c["key"] == summary.get("winner")), None)
    if winner is None:
        raise ConfirmError(f"the confirmation of study {name!r} has no winner (every run diverged?); see {path}")
    study, url = load_study(settings.study, settings.paths.studies_dir)
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == winner["trial"]), None)
    if trial is None or trial.state != TrialState.COMPLETE:
        raise ConfirmError(f"trial {winner['trial']} of study {name!r} named by {path} is not a complete trial")
    config = provenance_config(study, trial, list(study.user_attrs["objectives"]), url)
    config["provenance"]["source"] = "confirm"
    config["provenance"]["random_weights"] = bool(config["provenance"]["random_weights"] or summary["random_weights"])
    config["provenance"]["confirm"] = {
        "file": str(path), "steps": summary["steps"], "seeds": summary["seeds"], "n_seeds": winner["n_seeds"],
        "mean": winner["mean"], "std": winner["std"], "long_rank": winner["long_rank"],
        "race": {k: summary["race"][k] for k in ("primary", "alpha", "blocks", "runs", "runs_saved")},
        "verdicts": {c["label"]: c["verdict"]["text"] for c in summary["configs"]},
    }
    return export_study(settings, chosen=config)
