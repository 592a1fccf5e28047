"""One confirm job: a (config, seed) retrained at confirm's budget through the same `Trial` handle and the
same training the sweep used (built-in, the user's function or command), then told to the jobs study."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from ...search.storage import heartbeat_thread, redact
from ...search.tracking import PRECISION_TAG, StudyTracker
from ...settings import Settings
from ...trial.handle import Trial
from ...trial.metric_registry import format_metric
from ...trial.outcome import run_training
from .plan import ConfirmPlan
from .queue import FAILED_RESULT, KEY, SEED

__all__ = ["CONFIRM_SUMMARY_TAG", "CONFIRM_TAG", "JobContext", "JobTracking", "run_job"]

CONFIRM_TAG = "layersearch.confirm"
CONFIRM_SUMMARY_TAG = "layersearch.confirm_summary"


class JobTracking:
    """The confirm runs in the study's MLflow experiment, opened at the first call. The first MLflow error warns
    in one line and turns tracking off for the rest of the process: the results live in Optuna and confirm.json."""

    def __init__(self, tracking_uri: str, study_name: str, url: str, random_weights: bool):
        self.tracker: StudyTracker | None = None
        self.failed = False
        self._open = lambda: StudyTracker(tracking_uri, study_name, redact(url),
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


@dataclass
class JobContext:
    """What every job of one confirm process shares."""

    training: Any  # a trial.kinds.Training, prepared
    settings: Settings  # trainer.eval_every as the plan says
    study_name: str
    plan: ConfirmPlan
    objectives: list[tuple[str, str]]
    tracking: JobTracking
    device: torch.device
    log: Callable[[str], None]
    precision: str | None = None  # the built-in training's bf16 | fp32, recorded with each run


def job_dir(studies_dir: str, study_name: str, key: str, seed: int) -> Path:
    """``<studies_dir>/<study>/confirm/runs/<key>-seed<seed>``: the job's `Trial.dir`."""
    return Path(studies_dir) / study_name / "confirm" / "runs" / f"{key}-seed{seed}"


def run_job(jobs: optuna.Study, trial: optuna.Trial, ctx: JobContext) -> tuple[str, float]:
    """Train one (config, seed), tell Optuna, then MLflow; returns (state, seconds)."""
    attrs = trial.user_attrs
    seed, names = int(attrs[SEED]), [m for m, _ in ctx.objectives]
    number = attrs["label"].split(" ", 1)[0]
    tags = {CONFIRM_TAG: "true", "layersearch.confirm_of": str(attrs["trial"]), "layersearch.seed": str(seed)}
    if ctx.precision:
        tags[PRECISION_TAG] = ctx.precision
    if attrs.get("baseline"):
        tags["layersearch.baseline"] = attrs["baseline"]
    ctx.tracking("start_run", f"confirm {number} seed {seed}", tags,
                 params={"seed": seed, "steps": ctx.plan.steps, "trial": attrs["trial"], "label": attrs["label"]},
                 layer_config=attrs["layer_config"])
    curve: list[list[Any]] = []

    def report(step: int, metrics: dict[str, float]) -> None:
        ctx.tracking("log_metrics", step, metrics)
        kept = {m: metrics[m] for m in names if m in metrics}
        if kept:
            curve.append([step, kept])
            trial.set_user_attr("curve", curve)
        return None  # confirm never prunes: every seed runs its whole budget

    folder = job_dir(ctx.settings.paths.studies_dir, ctx.study_name, attrs[KEY], seed)
    if folder.exists():
        shutil.rmtree(folder)  # a killed earlier attempt at this job
    handle = Trial(number=attrs["trial"], study_name=ctx.study_name, params=attrs.get("params") or {},
                   layer_config=attrs["layer_config"], steps=ctx.plan.steps, seed=seed, device=ctx.device,
                   dir=folder, objectives=names, reporter=report, loss_seed=ctx.settings.seed,
                   lpips=ctx.settings.metrics.lpips, metric_names=ctx.settings.metrics.names)
    with heartbeat_thread(jobs, trial, ctx.settings.study.heartbeat_s):
        try:
            outcome = run_training(ctx.training, handle)
        except KeyboardInterrupt:
            # Ctrl-C: recorded, then it stops confirm; the next run queues this job again.
            trial.set_user_attr("fail_reason", "interrupted")
            jobs.tell(trial, state=TrialState.FAIL)
            ctx.tracking("end_trial", "FAIL", reason="interrupted")
            raise
    if folder.is_dir():
        ctx.tracking("log_artifacts", folder)
    if outcome.state != "COMPLETE":
        reason = outcome.reason if outcome.state == "FAIL" else f"stopped by the training itself ({outcome.reason})"
        trial.set_user_attr("fail_reason", reason)
        if outcome.bug is None:
            trial.set_user_attr(FAILED_RESULT, True)  # a result of this config (diverged, failed): not retried
        jobs.tell(trial, state=TrialState.FAIL)
        ctx.tracking("end_trial", "FAIL", reason=reason)
        if outcome.bug is not None:
            raise outcome.bug  # a bug in layersearch: recorded, then it stops confirm; rerunning queues it again
        ctx.log(f"{attrs['label']} seed {seed}: FAIL ({reason})")
        return "FAIL", outcome.seconds
    values = {m: outcome.values[m] for m in names}
    trial.set_user_attr("metrics", {k: v for k, v in outcome.values.items() if not k.startswith("train/")})
    # The final scores per validation image, for the race's (seed, image) blocks: the built-in training and a
    # user's training that scores through Trial.score record them (only values that average to the run's own).
    per_image = {m: outcome.per_image[m] for m in names if m in outcome.per_image}
    if names[0] in per_image:
        trial.set_user_attr("per_image", per_image)
        trial.set_user_attr("images", outcome.images)
    trial.set_user_attr("seconds", outcome.seconds)
    try:
        jobs.tell(trial, list(values.values()))
    except optuna.exceptions.UpdateFinishedTrialError:
        ctx.log(f"{attrs['label']} seed {seed}: another process had failed this job as stale and queued it again")
        return "TAKEN", outcome.seconds
    ctx.tracking("end_trial", "COMPLETE", values)
    ctx.log(f"{attrs['label']} seed {seed}: " + "  ".join(f"{m}={format_metric(m, v)}" for m, v in values.items())
            + f"  ({outcome.seconds:.0f} s)")
    return "COMPLETE", outcome.seconds
