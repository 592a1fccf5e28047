"""A worker's loop: reserve a trial, run it, until the study has ``study.n_trials`` complete + pruned trials.

Every worker (the single process of a plain sweep, each local worker process, each SLURM array task) runs
this loop against the same storage.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator

from ...progress import progress, write
from ...settings import Settings
from ..results import SweepResult, best_rows, best_summary, counts, last_fail_reason, log_summary, noise_lines
from ..storage import StudyError, redact
from .algorithms import MultiObjectiveMedian
from .runner import SweepContext, run_trial
from .study import Prepared, fail_dead, prepare_study, reserve_trial

__all__ = ["MAX_FAILED_IN_A_ROW", "MAX_INFEASIBLE_IN_A_ROW", "Interrupted", "run_worker", "stop_on_signals"]

#: Consecutive infeasible trials after which the space is judged (nearly) impossible to sample.
MAX_INFEASIBLE_IN_A_ROW = 50
#: Consecutive failed trainings after which the sweep stops instead of looping.
MAX_FAILED_IN_A_ROW = 5


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


def run_worker(settings: Settings, fn=None) -> SweepResult:
    """Prepare (or join) the study and run trials until it has ``study.n_trials``; Ctrl-C/SIGTERM interrupt.

    Args:
        fn: the training function of ``layersearch.sweep(train, ...)``, when given as one.
    """
    log = write
    with stop_on_signals():
        prep = prepare_study(settings, log, fn=fn)
        return _loop(prep, log)


def _context(prep: Prepared, log) -> SweepContext:
    training, settings = prep.training, prep.settings
    multi_pruner = None
    if len(prep.objectives) > 1 and settings.study.pruner == "median":
        multi_pruner = MultiObjectiveMedian(prep.study, prep.objectives[0][0], prep.objectives[0][1],
                                            settings.study.n_startup_trials, prep.n_warmup)
    from ...trial.train import resolve_device

    device = training.device if training.kind == "builtin" else resolve_device(settings.trainer.device)
    precision = training.precision() if training.kind == "builtin" else None
    return SweepContext(prep.study, prep.space, training, settings, prep.objectives, prep.tracker, device, log,
                        multi_pruner, precision)


def _loop(prep: Prepared, log) -> SweepResult:
    study, url, objectives, n_trials, tracker = prep.study, prep.url, prep.objectives, prep.n_trials, prep.tracker
    name = study.study_name
    counted = counts(study)
    done = counted["complete"] + counted["pruned"]
    result = SweepResult(name, redact(url), counted, {}, objectives, prep.random_weights)
    result.experiment_id = tracker.experiment_id
    if done >= n_trials:
        log(f"study {name} already has {done} complete or pruned trials (study.n_trials={n_trials}); nothing to run")
        result.best_rows = best_rows(study, objectives)
        result.noise_lines = noise_lines(study, objectives)
        return result

    started = time.perf_counter()
    ctx = _context(prep, log)
    timeout = prep.settings.study.timeout
    poll_s = min(5.0, prep.settings.study.heartbeat_s)
    # One plain line per finished trial when the output is a log file, not a terminal.
    bar = progress(n_trials, f"sweep {name}", "trial", position=0, initial=done, every_s=0)
    infeasible_in_a_row = failed_in_a_row = 0
    try:
        while True:
            if timeout and time.perf_counter() - started > float(timeout):
                log(f"study.timeout={timeout}s reached; stopping (resume by running the same command again)")
                break
            fail_dead(prep, log)
            trial, done = reserve_trial(study, url, n_trials)
            bar.update(done - bar.n)
            if trial is None:
                if done >= n_trials:
                    break
                time.sleep(poll_s)  # the last trials run in other workers; one may die and need a retry
                continue
            state, seconds = run_trial(trial, ctx)
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
            counted = counts(study)
            # The postfix first, so that a plain progress line (printed by the update) carries this trial's counts.
            bar.set_postfix_str(f"done {counted['complete']} pruned {counted['pruned']} failed {counted['failed']} | "
                                f"{best_summary(study, objectives)}")
            bar.update(counted["complete"] + counted["pruned"] - bar.n)
    finally:
        bar.close()
        result.seconds_total = time.perf_counter() - started
        result.counts = counts(study)
        result.best_rows = best_rows(study, objectives)
        result.noise_lines = noise_lines(study, objectives)
        if result.best_rows:
            log_summary(study, objectives, tracker, url, prep.random_weights)
    return result
