"""The confirm job queue: the trials of a second Optuna study, ``<name>.confirm``, in the study's storage.

Each (config, seed) run is enqueued as a fixed trial (user attrs: config key, seed, layer config) and told its
scores when it finishes; ``study.ask()`` pops one queued job per caller, so several confirm processes share the
queue and a killed one resumes where it stopped (see insight/confirm/run.py).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ...search.storage import redact, storage_lock
from ...settings import TrainerSettings
from .plan import Candidate, ConfirmError, ConfirmPlan

__all__ = ["FAILED_RESULT", "KEY", "SEED", "SUFFIX", "check_budget", "claim", "enqueue_missing", "fail_abandoned",
           "failed_result", "job_of", "per_seed"]

SUFFIX = ".confirm"  # the jobs study of study NAME is NAME.confirm, in the same storage
KEY, SEED = "confirm_key", "seed"  # user attrs that name a job
FAILED_RESULT = "failed_run"  # user attr: the run failed by itself (diverged, the user's code failed): not retried


def failed_result(trial: FrozenTrial) -> bool:
    """A job whose failure is its result (``nonfinite``: what confirm called it before user trainings)."""
    return bool(trial.user_attrs.get(FAILED_RESULT) or trial.user_attrs.get("nonfinite"))


def job_of(trial: FrozenTrial | optuna.Trial) -> tuple[str, int] | None:
    attrs = trial.user_attrs
    return (attrs[KEY], int(attrs[SEED])) if KEY in attrs and SEED in attrs else None


def _settled(trial: FrozenTrial) -> bool:
    """Queued, running, done, or diverged (a result, not retried)."""
    return trial.state in (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE) or failed_result(trial)


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


def fail_abandoned(jobs: optuna.Study, log) -> None:
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


def check_budget(jobs: optuna.Study, plan: ConfirmPlan, trainer: TrainerSettings, url: str) -> None:
    """A confirmation keeps its budget: results at different steps or batch sizes must not be averaged."""
    budget = {"steps": plan.steps, "batch_size": trainer.batch_size, "lr": trainer.lr}
    recorded = jobs.user_attrs.get("budget")
    if recorded is None:
        jobs.set_user_attr("budget", budget)
    elif recorded != budget:
        changed = ", ".join(f"{k}={recorded[k]} (now {budget[k]})" for k in budget if recorded.get(k) != budget[k])
        raise ConfirmError(f"{jobs.study_name} was run with {changed}; rerun with those, or start over with "
                           f"`optuna delete-study --study-name {jobs.study_name} --storage {redact(url)}`")


def enqueue_missing(jobs: optuna.Study, candidates: Sequence[Candidate], seeds: Sequence[int]) -> int:
    """Queue every (config, seed) job that has no live, finished or diverged trial; return how many."""
    settled = {job_of(t) for t in jobs.get_trials(deepcopy=False) if _settled(t)}
    queued = 0
    for c in candidates:
        for seed in seeds:
            if (c.key, seed) not in settled:
                jobs.enqueue_trial({}, user_attrs={KEY: c.key, SEED: seed, "trial": c.trial, "baseline": c.baseline,
                                                   "label": c.label, "layer_config": c.layer_config,
                                                   "params": c.params},
                                   skip_if_exists=False)
                queued += 1
    return queued


def _duplicate_of(jobs: optuna.Study, trial: optuna.Trial, job: tuple[str, int]) -> int | None:
    for t in jobs.get_trials(deepcopy=False):
        if t.number == trial.number or job_of(t) != job:
            continue
        if t.state == TrialState.COMPLETE or failed_result(t) or (
                t.state in (TrialState.WAITING, TrialState.RUNNING) and t.number < trial.number):
            return t.number
    return None


def claim(jobs: optuna.Study, url: str) -> optuna.Trial | None:
    """Pop the next queued job for this process (or None when the queue is empty)."""
    with storage_lock(url):
        while jobs.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            trial = jobs.ask()
            job = job_of(trial)
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


def per_seed(jobs: optuna.Study, names: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """config key -> one row per finished seed (values, curve and, where the training gives them, ``per_image``
    scores and ``images`` names; or ``failed``: reason), seeds in order."""
    rows: dict[str, dict[int, dict[str, Any]]] = {}
    for t in jobs.get_trials(deepcopy=False):
        job = job_of(t)
        if job is None or job[1] in rows.get(job[0], {}):
            continue
        if t.state == TrialState.COMPLETE:
            metrics = {**t.user_attrs.get("metrics", {}), **dict(zip(names, t.values, strict=True))}
            row = {"seed": job[1], **metrics, "curve": t.user_attrs.get("curve", [])}
            if t.user_attrs.get("per_image"):
                row.update(per_image=t.user_attrs["per_image"], images=t.user_attrs.get("images", []))
            rows.setdefault(job[0], {})[job[1]] = row
        elif failed_result(t):
            rows.setdefault(job[0], {})[job[1]] = {"seed": job[1], "failed": t.user_attrs.get("fail_reason", "")}
    return {key: [by_seed[s] for s in sorted(by_seed)] for key, by_seed in rows.items()}
