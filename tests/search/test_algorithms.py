"""MultiObjectiveMedian applies Optuna's MedianPruner rule: same decisions on the same histories."""

from __future__ import annotations

import math
import random

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from layersearch.search.loop import MultiObjectiveMedian, make_pruner
from layersearch.search.storage import StudyError

STEPS = (50, 100, 150, 200)


def _history(rng: random.Random, n_steps: int) -> dict[int, float]:
    values = {}
    for step in STEPS[:n_steps]:
        roll = rng.random()
        values[step] = math.nan if roll < 0.05 else round(rng.uniform(0.0, 1.0), 2)  # ties happen too
    return values


def _study(direction: str, trials: list[tuple[TrialState, dict[int, float]]]) -> optuna.Study:
    """A single-objective study whose trials carry the same values as Optuna intermediates and as ours."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction=direction)
    for state, values in trials:
        study.add_trial(create_trial(
            state=state,
            value=values[max(values)] if state == TrialState.COMPLETE and not math.isnan(values[max(values)]) else (
                0.5 if state == TrialState.COMPLETE else None),
            params={"x": 0.5},
            distributions={"x": FloatDistribution(0, 1)},
            intermediate_values=values,
            user_attrs={"intermediate": {str(s): v for s, v in values.items()}},
        ))
    return study


@pytest.mark.filterwarnings("ignore:All-NaN slice:RuntimeWarning")  # Optuna's nanmin on an all-NaN history
@pytest.mark.parametrize("direction", ["minimize", "maximize"])
@pytest.mark.parametrize("n_startup, n_warmup, interval", [(0, 0, 1), (2, 0, 1), (3, 100, 1), (1, 50, 100), (6, 0, 1)])
def test_same_decisions_as_optunas_median_pruner(direction, n_startup, n_warmup, interval):
    rng = random.Random(f"{direction}{n_startup}{n_warmup}{interval}")
    decisions = 0
    for _ in range(40):
        history = [
            (rng.choice([TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]), _history(rng, rng.randint(1, 4)))
            for _ in range(rng.randint(0, 10))
        ]
        study = _study(direction, history)
        optunas = optuna.pruners.MedianPruner(n_startup_trials=n_startup, n_warmup_steps=n_warmup, interval_steps=interval)
        ours = MultiObjectiveMedian(study, "lpips", direction, n_startup, n_warmup, interval_steps=interval)
        running = _history(rng, 4)
        for n in range(1, 5):
            reported = dict(list(running.items())[:n])
            trial = create_trial(state=TrialState.RUNNING, intermediate_values=reported)
            expected = optunas.prune(study, trial)
            assert ours.should_prune(max(reported), {str(s): v for s, v in reported.items()}) == expected, (
                history, reported)
            decisions += expected
    assert decisions > 0  # the histories do exercise pruning, not only the no-prune paths


def test_pruned_trials_are_not_in_the_median_and_the_best_so_far_counts():
    done = [(TrialState.COMPLETE, {50: 0.5, 100: 0.4}), (TrialState.COMPLETE, {50: 0.6, 100: 0.5})]
    many_pruned = [(TrialState.PRUNED, {50: 0.9, 100: 0.9})] * 5
    pruner = MultiObjectiveMedian(_study("minimize", done + many_pruned), "lpips", "minimize", 1, 0)
    # Median of completed trials at step 100 is 0.45; the pruned ones (0.9) would have made it 0.9.
    assert pruner.should_prune(100, {"50": 0.6, "100": 0.5})
    # The best value so far (0.3 at step 50) is what is compared, not the current 0.5.
    assert not pruner.should_prune(100, {"50": 0.3, "100": 0.5})
    # Warm-up is `step < n_warmup`: at step == n_warmup the trial can already be pruned.
    warm = MultiObjectiveMedian(_study("minimize", done), "lpips", "minimize", 1, n_warmup=100)
    assert not warm.should_prune(50, {"50": 0.9})
    assert warm.should_prune(100, {"100": 0.9})


def test_startup_counts_completed_trials_only():
    history = [(TrialState.COMPLETE, {50: 0.1})] + [(TrialState.PRUNED, {50: 0.1})] * 3
    assert not MultiObjectiveMedian(_study("minimize", history), "lpips", "minimize", 2, 0).should_prune(50, {"50": 0.9})
    assert MultiObjectiveMedian(_study("minimize", history), "lpips", "minimize", 1, 0).should_prune(50, {"50": 0.9})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_startup": -1}, "n_startup_trials must be >= 0"),
        ({"n_warmup": -1}, "n_warmup_steps must be >= 0"),
        ({"interval_steps": 0}, "interval_steps must be >= 1"),
        ({"n_min_trials": 0}, "n_min_trials must be >= 1"),
        ({"direction": "up"}, "direction must be minimize or maximize"),
    ],
)
def test_arguments_are_validated(kwargs, message):
    args = {"study": None, "metric": "lpips", "direction": "minimize", "n_startup": 0, "n_warmup": 0, **kwargs}
    with pytest.raises(StudyError, match=message):
        MultiObjectiveMedian(**args)


@pytest.mark.parametrize("n_objectives", [1, 2])
def test_make_pruner_refuses_bad_median_arguments_as_a_study_error(n_objectives):
    with pytest.raises(StudyError, match="warm"):
        make_pruner("median", n_objectives, n_startup=1, n_warmup=-1, steps=10, eval_every=None)
