"""One trial of a sweep: sample a layer config, build the loss, train, report and prune, record.

Whatever the outcome (complete, pruned, failed, infeasible), the trial is told to Optuna and its MLflow run
is closed with the state and reason.
"""

from __future__ import annotations

import gc
import os
import socket
import tempfile
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from ..lossnet.loss import PerceptualLoss
from ..outputs import RANDOM_BANNER, save_grid
from ..trial.train import NonFiniteLossError, TrainResult, precision_used, train
from .space import Infeasible
from .storage import HEARTBEAT_S, heartbeat_thread
from .tracking import PRECISION_TAG, RETRY_TAG, trial_run_name


def free_memory() -> None:
    """Give back what a failed trial held (CUDA's cache included), so the next trial can start."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _Numbered:
    """``trial`` seen with another number: a retry asks its layer flags in the dead trial's order (the space
    rotates the first flag by trial number), so its fixed parameters give the same layer config."""

    def __init__(self, trial, number: int):
        self._trial, self.number = trial, number

    def __getattr__(self, name):
        return getattr(self._trial, name)


def run_trial(study, trial, space, task, cfg, objectives, tracker, multi_pruner, log) -> tuple[str, float]:
    """Run ``trial`` (already asked), tell Optuna and record it in MLflow whatever its outcome.

    A background thread records the trial's heartbeat every ``study.heartbeat_s`` while it runs, so a
    worker that dies is noticed within ``study.grace_s`` by any live worker (see storage.fail_dead_trials).

    Returns:
        (state, seconds spent training and evaluating), the latter for the sweep's overhead figure.
    """
    every = float(cfg["study"].get("heartbeat_s") or HEARTBEAT_S)
    try:
        with heartbeat_thread(study, trial, every):
            return _run(study, trial, space, task, cfg, objectives, tracker, multi_pruner, log)
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM (see study.stop_on_signals), wherever in the trial it landed (training, MLflow
        # calls): the run was stopped, not broken. Recorded unless already told; rerunning resumes.
        if _record_interrupt(study, trial, tracker):
            log(f"trial {trial.number}: FAIL (interrupted)")
        raise


def _record_interrupt(study, trial, tracker) -> bool:
    """Tell an interrupted trial FAIL and end its run KILLED; False if it was already told."""
    try:
        trial.set_user_attr("fail_reason", "interrupted")
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # stopped while closing its MLflow run: the next sweep's backfill closes that
    study.tell(trial, state=TrialState.FAIL)
    tracker.end_trial("FAIL", reason="interrupted", status="KILLED")
    return True


def _run(study, trial, space, task, cfg, objectives, tracker, multi_pruner, log) -> tuple[str, float]:
    baseline = trial.user_attrs.get("baseline")
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    retry_of = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
    if retry_of is not None:
        trial.set_user_attr("retry_of", retry_of)
    # Which process ran it: the worker logs and a dead worker's trial can then be matched.
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    metric_names = [m for m, _ in objectives]
    try:
        config = space.suggest(trial if retry_of is None else _Numbered(trial, retry_of))
    except Infeasible as err:
        reason = f"infeasible: {err}"
        trial.set_user_attr("fail_reason", reason)
        tracker.start_trial(trial.number, trial.params, {}, tags={}, name=trial_run_name(trial.number, None))
        tracker.end_trial("FAIL", reason=reason)
        study.tell(trial, state=TrialState.FAIL)
        return "INFEASIBLE", 0.0
    layer_config = config.to_dict()
    trial.set_user_attr("layer_config", layer_config)
    # bf16 or fp32: trainer.precision=auto differs between machines, and results should say which ran.
    tags = {PRECISION_TAG: precision_used(cfg["trainer"], task.device)}
    if baseline:
        tags["layersearch.baseline"] = baseline
    if retry_of is not None:
        tags[RETRY_TAG] = str(retry_of)
    tracker.start_trial(trial.number, trial.params, layer_config, tags=tags,
                        name=trial_run_name(trial.number, layer_config, baseline, retry_of))
    if multi_pruner is not None:
        multi_pruner.refresh()
    intermediate: dict[str, float] = {}

    def report(step: int, metrics: dict[str, float]) -> None:
        tracker.log_metrics(step, metrics)
        value = metrics[metric_names[0]]
        if len(objectives) == 1:
            trial.report(value, step)
            prune = trial.should_prune()
        else:
            intermediate[str(step)] = value
            trial.set_user_attr("intermediate", intermediate)
            prune = multi_pruner is not None and multi_pruner.should_prune(step, intermediate)
        if prune:
            raise optuna.TrialPruned(f"{metric_names[0]}={value:.4f} at step {step} is worse than the median")

    timing = TrainResult(metrics={})
    label = f"trial {trial.number}" + (f" ({baseline})" if baseline else "") + (
        f" (retry of {retry_of})" if retry_of is not None else "")
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
    except torch.OutOfMemoryError as err:
        # Out of memory is this trial's size, not a bug: record it, free the memory (below, once the
        # traceback and the tensors its frames hold are gone), go on with the next trial.
        reason = "out of memory: " + " ".join(str(err).split())[:300]
    except Exception as err:
        # Anything else is a bug: recorded, then it stops the sweep; rerunning resumes it.
        reason = f"{type(err).__name__}: {err}"
        trial.set_user_attr("fail_reason", reason)
        study.tell(trial, state=TrialState.FAIL)
        tracker.end_trial("FAIL", reason=reason)
        raise
    free_memory()
    trial.set_user_attr("fail_reason", reason)
    study.tell(trial, state=TrialState.FAIL)
    tracker.end_trial("FAIL", reason=reason)
    log(f"{label}: FAIL ({reason})")
    return "FAIL", timing.train_seconds + timing.eval_seconds
