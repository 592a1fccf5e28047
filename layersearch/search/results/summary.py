"""What a study has come to, for the console and MLflow: counts, the best rows with the baselines, the seed
noise verdicts, the progress bar's best, and the summary run."""

from __future__ import annotations

from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from ...trial.metric_registry import format_metric
from ..storage import redact, storage_lock
from .export import provenance_config
from .noise import compare, describe, is_repeat, noise_floor, runs_of
from .ranking import first_runs, front

__all__ = ["SweepResult", "best_rows", "best_summary", "counts", "last_fail_reason", "log_summary", "noise_lines"]


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
    noise_lines: list[str] = field(default_factory=list)  # seed noise and the best trial vs each baseline


def counts(study: optuna.Study) -> dict[str, int]:
    """COMPLETE, PRUNED and FAIL first runs (what ``n_trials`` counts), and the baselines' seed repeats."""
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials if not is_repeat(t)]
    return {
        "complete": states.count(TrialState.COMPLETE),
        "pruned": states.count(TrialState.PRUNED),
        "failed": states.count(TrialState.FAIL),
        "repeats": sum(is_repeat(t) for t in trials),
    }


def best_rows(study: optuna.Study, objectives: list[tuple[str, str]]) -> dict[str, dict[str, float]]:
    """Best trial (single objective) or the Pareto front, as printable rows, baselines named."""
    trials = first_runs(study)
    names = [m for m, _ in objectives]
    rows = {}
    for t in front(trials, [d for _, d in objectives]):
        label = f"#{t.number}" + (f" ({t.user_attrs['baseline']})" if t.user_attrs.get("baseline") else "")
        rows[label] = dict(zip(names, t.values, strict=True))
    for t in trials:  # the baselines always appear, so the table answers "did the search beat them?"
        if t.user_attrs.get("baseline") and t.state == TrialState.COMPLETE:
            rows.setdefault(f"#{t.number} ({t.user_attrs['baseline']})", dict(zip(names, t.values, strict=True)))
    return rows


def noise_lines(study: optuna.Study, objectives: list[tuple[str, str]]) -> list[str]:
    """The study's seed noise and, for the best trial on the primary objective, each baseline's verdict.

    "better"/"worse" only beyond the seed noise measured by the baselines' repeats (search/results/noise.py: a
    t test at 5% with the pooled seed SD); "within noise" otherwise.
    """
    trials = study.get_trials(deepcopy=False)
    names = [m for m, _ in objectives]
    floor = noise_floor(trials, names)
    lines = [f"seed noise (baselines rerun with another seed): {describe(floor)}"]
    best = front(first_runs(study), [objectives[0][1]])
    if not best:
        return lines
    winner = best[0]
    for base in (t for t in first_runs(study) if t.user_attrs.get("baseline") and t.state == TrialState.COMPLETE):
        if base.number == winner.number:
            continue
        for i, (metric, direction) in enumerate(objectives):
            runs = runs_of(base, trials, i)
            diff = winner.values[i] - sum(runs) / len(runs)
            verdict = compare(winner.values[i], runs, direction, floor[metric])
            # What the verdict rests on: the runs on each side and the df of the seed noise. Not the images: the
            # images of one run share its luck, so with one common seed they add no independent blocks
            # (confirm's race pairs by seed and image over several seeds).
            rests = f" ({floor[metric].df} df of seed noise)" if floor[metric].sd is not None else ""
            lines.append(f"  best #{winner.number} (1 run) vs {base.user_attrs['baseline']} ({len(runs)} seed"
                         f"{'s' * (len(runs) != 1)}) on {metric}: {format_metric(metric, diff, signed=True)}: "
                         f"{verdict}{rests}")
    return lines


def last_fail_reason(study: optuna.Study) -> str:
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    return failed[-1].user_attrs.get("fail_reason", "unknown") if failed else "unknown"


def best_summary(study: optuna.Study, objectives) -> str:
    best = front(first_runs(study), [objectives[0][1]])
    if not best:
        return "no complete trial yet"
    return f"best {objectives[0][0]} {format_metric(objectives[0][0], best[0].values[0])} (#{best[0].number})"


def log_summary(study, objectives, tracker, url, random_weights) -> None:
    names = [m for m, _ in objectives]
    best = front(first_runs(study), [d for _, d in objectives])
    configs = [provenance_config(study, t, names, url) for t in best]
    table = [{"trial": t.number, "baseline": t.user_attrs.get("baseline", ""),
              **dict(zip(names, t.values, strict=True))} for t in best]
    # Locked: two workers finishing together would each replace the summary run and leave two.
    with storage_lock(tracker.uri):
        tracker.log_summary(configs, table, redact(url), extra_params={"random_weights": str(random_weights).lower()})
