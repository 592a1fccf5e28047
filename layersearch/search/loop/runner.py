"""One trial of a sweep: sample a layer config, hand it to the training through the `Trial` handle, report
and prune, record.

Whatever the kind of training (built-in, a user's function or command) and whatever its outcome
(complete, pruned, failed, infeasible), the trial is told to Optuna and its MLflow run is closed with the
state and reason.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from ...lossnet.registry import loss_network
from ...settings import PathsSettings, Settings
from ...trial.handle import Trial
from ...trial.metric_registry import format_metric
from ...trial.outcome import run_training
from ..storage import heartbeat_thread
from ..tracking import PRECISION_TAG, RETRY_TAG, StudyTracker, trial_run_name
from .algorithms import MultiObjectiveMedian
from .space import Infeasible, SearchSpace

__all__ = ["SweepContext", "run_trial", "trial_dir"]


@dataclass
class SweepContext:
    """What every trial of one worker shares: the study's objectives and space, the training, the records."""

    study: optuna.Study
    space: SearchSpace
    training: Any  # a trial.kinds.Training
    settings: Settings
    objectives: list[tuple[str, str]]
    tracker: StudyTracker
    device: torch.device
    log: Callable[[str], None]
    multi_pruner: MultiObjectiveMedian | None = None
    precision: str | None = None  # bf16 | fp32 for the built-in training: recorded with each result
    names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.names = [m for m, _ in self.objectives]


def trial_dir(paths: PathsSettings, study_name: str, number: int) -> Path:
    """``<paths.studies_dir>/<study>/trials/<number>``: the trial's own folder (`Trial.dir`)."""
    return Path(paths.studies_dir) / study_name / "trials" / str(number)


class _Numbered:
    """``trial`` seen with another number: a retry asks its layer flags in the dead trial's order (the space
    rotates the first flag by trial number), so its fixed parameters give the same layer config."""

    def __init__(self, trial, number: int):
        self._trial, self.number = trial, number

    def __getattr__(self, name):
        return getattr(self._trial, name)


def run_trial(trial: optuna.Trial, ctx: SweepContext) -> tuple[str, float]:
    """Run ``trial`` (already asked), tell Optuna and record it in MLflow whatever its outcome.

    A background thread records the trial's heartbeat every ``study.heartbeat_s`` while it runs, so a
    worker that dies is noticed within ``study.grace_s`` by any live worker (see storage.fail_dead_trials).

    Returns:
        (state, seconds spent in the training), the latter for the sweep's overhead figure.
    """
    try:
        with heartbeat_thread(ctx.study, trial, ctx.settings.study.heartbeat_s):
            return _run(trial, ctx)
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM (see loop.stop_on_signals), wherever in the trial it landed (training, MLflow
        # calls): the run was stopped, not broken. Recorded unless already told; rerunning resumes.
        if _record_interrupt(ctx.study, trial, ctx.tracker):
            ctx.log(f"trial {trial.number}: FAIL (interrupted)")
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


def _reporter(trial: optuna.Trial, ctx: SweepContext) -> Callable[[int, dict[str, float]], str | None]:
    """Each report: to MLflow, then the primary objective to the pruner; a reason when it says stop.

    A baseline's seed repeat only goes to MLflow: it is there to measure noise, so it runs to the end, and its
    values must not weigh twice in the medians other trials are judged by.
    """
    primary = ctx.names[0]
    repeat = trial.user_attrs.get("repeat_of") is not None
    intermediate: dict[str, float] = {}
    if ctx.multi_pruner is not None:
        ctx.multi_pruner.refresh()

    def report(step: int, metrics: dict[str, float]) -> str | None:
        ctx.tracker.log_metrics(step, metrics)
        if primary not in metrics or repeat:
            return None  # a step without the objective (a training loss alone): nothing to prune on
        value = metrics[primary]
        if len(ctx.objectives) == 1:
            trial.report(value, step)
            prune = trial.should_prune()
        else:
            intermediate[str(step)] = value
            trial.set_user_attr("intermediate", intermediate)
            prune = ctx.multi_pruner is not None and ctx.multi_pruner.should_prune(step, intermediate)
        if not prune:
            return None
        pruner = ctx.settings.study.pruner
        return f"{primary}={value:.4g} at step {step} is worse than the median" if pruner == "median" \
            else f"{primary}={value:.4g} at step {step}: stopped by the {pruner} pruner"

    return report


def _run(trial: optuna.Trial, ctx: SweepContext) -> tuple[str, float]:
    study, tracker, log = ctx.study, ctx.tracker, ctx.log
    baseline = trial.user_attrs.get("baseline")
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    retry_of = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
    if retry_of is not None:
        trial.set_user_attr("retry_of", retry_of)
    # Which process ran it: the worker logs and a dead worker's trial can then be matched.
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    try:
        config = ctx.space.suggest(trial if retry_of is None else _Numbered(trial, retry_of))
    except Infeasible as err:
        reason = f"infeasible: {err}"
        trial.set_user_attr("fail_reason", reason)
        tracker.start_trial(trial.number, trial.params, {}, tags={}, name=trial_run_name(trial.number, None))
        tracker.end_trial("FAIL", reason=reason)
        study.tell(trial, state=TrialState.FAIL)
        return "INFEASIBLE", 0.0
    layer_config = config.to_dict()
    trainer = ctx.settings.trainer
    seed = int(trial.user_attrs.get("seed", trainer.seed))  # a baseline's repeat carries its own
    trial.set_user_attr("layer_config", layer_config)
    trial.set_user_attr("seed", seed)
    tags = {}
    if config.layers:  # where the loss network and its weights came from (the builder, a file's sha256)
        tags.update({f"layersearch.loss_net.{k}": v for k, v in loss_network(config.arch).provenance(config.weights).items()})
    if ctx.precision:  # bf16 or fp32: trainer.precision=auto differs between machines; results say which ran
        tags[PRECISION_TAG] = ctx.precision
    if baseline:
        tags["layersearch.baseline"] = baseline
    if retry_of is not None:
        tags[RETRY_TAG] = str(retry_of)
    if trial.user_attrs.get("repeat_of") is not None:
        tags["layersearch.repeat_of"] = str(trial.user_attrs["repeat_of"])
        baseline = f"{baseline}, seed {seed}"  # its label in the runs table and the console
    tracker.start_trial(trial.number, trial.params, layer_config, tags=tags,
                        name=trial_run_name(trial.number, layer_config, baseline, retry_of))
    folder = trial_dir(ctx.settings.paths, study.study_name, trial.number)
    if folder.exists():
        shutil.rmtree(folder)  # trial numbers are unique in a study: this is a deleted study's leftover
    handle = Trial(number=trial.number, study_name=study.study_name, params=trial.params, layer_config=layer_config,
                   steps=trainer.steps, seed=seed, device=ctx.device, dir=folder, objectives=ctx.names,
                   reporter=_reporter(trial, ctx), loss_seed=ctx.settings.seed, lpips=ctx.settings.metrics.lpips,
                   metric_names=ctx.settings.metrics.names)
    outcome = run_training(ctx.training, handle)
    if folder.is_dir():
        tracker.log_artifacts(folder)
    label = f"trial {trial.number}" + (f" ({baseline})" if baseline else "") + (
        f" (retry of {retry_of})" if retry_of is not None else "")
    if outcome.state == "COMPLETE":
        values = [outcome.values[m] for m in ctx.names]
        if outcome.per_image:  # final scores per image (2 images x 3 metrics: small), for paired comparisons
            trial.set_user_attr("per_image", outcome.per_image)
            trial.set_user_attr("images", outcome.images)
        study.tell(trial, values)
        tracker.end_trial("COMPLETE", outcome.values)
        log(f"{label}: COMPLETE " + "  ".join(f"{m}={format_metric(m, v)}" for m, v in zip(ctx.names, values, strict=True)))
    elif outcome.state == "PRUNED":
        study.tell(trial, state=TrialState.PRUNED)
        tracker.end_trial("PRUNED", reason=outcome.reason)
        log(f"{label}: PRUNED ({outcome.reason})")
    else:
        trial.set_user_attr("fail_reason", outcome.reason)
        study.tell(trial, state=TrialState.FAIL)
        tracker.end_trial("FAIL", reason=outcome.reason)
        if outcome.bug is not None:
            raise outcome.bug  # a bug in layersearch: recorded, then it stops the sweep; rerunning resumes
        log(f"{label}: FAIL ({outcome.reason})")
    return outcome.state, outcome.seconds
