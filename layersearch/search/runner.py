"""One trial of a sweep: sample a layer config, build the loss, train, report and prune, record.

Whatever the outcome (complete, pruned, failed, infeasible), the trial is told to Optuna and its MLflow run
is closed with the state and reason.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..lossnet.loss import PerceptualLoss
from ..outputs import RANDOM_BANNER, save_grid
from ..trial.train import NonFiniteLossError, TrainResult, train
from .space import Infeasible
from .storage import record_heartbeat


def run_trial(study, space, task, cfg, objectives, tracker, multi_pruner, log) -> tuple[str, float]:
    """One trial, told to Optuna and recorded in MLflow whatever its outcome.

    Returns:
        (state, seconds spent training and evaluating), the latter for the sweep's overhead figure.
    """
    trial = study.ask()
    # ask/tell gets no heartbeat thread (only Study.optimize starts one), so beat by hand at the start and at
    # each evaluation: a later sweep's fail_stale_trials then fails the trials of a killed process.
    record_heartbeat(study, trial)
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
        record_heartbeat(study, trial)
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


