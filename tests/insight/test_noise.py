"""search/results/noise.py: the seed-noise floor from baseline repeats, and the rule that calls differences against it."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from optuna.trial import TrialState
from scipy import stats

from layersearch.search.results import (
    NO_ESTIMATE,
    NoiseFloor,
    compare,
    describe,
    is_repeat,
    noise_floor,
    runs_of,
    seed_groups,
    threshold,
)


def run(number: int, values, seed: int | None = 0, repeat_of: int | None = None, state=TrialState.COMPLETE):
    attrs = {"baseline": "b"} if repeat_of is None else {"baseline": "b", "repeat_of": repeat_of}
    if seed is not None:
        attrs["seed"] = seed
    return SimpleNamespace(number=number, values=list(values), state=state, user_attrs=attrs)


def test_pooled_sd_matches_a_hand_computation():
    # Two baselines run twice: differences 0.2 and 0.4 -> sd^2 = (0.2^2 + 0.4^2) / (2 * 2) = 0.05, df 2.
    trials = [run(0, [1.0, 30.0]), run(1, [2.0, 31.0]), run(2, [1.2, 30.5], seed=1, repeat_of=0),
              run(3, [2.4, 31.0], seed=1, repeat_of=1), run(4, [9.0, 9.0])]
    noise = noise_floor(trials, ["lpips", ("psnr_y", "maximize")])
    assert noise["lpips"].sd == pytest.approx(math.sqrt(0.05)) and noise["lpips"].df == 2
    assert (noise["lpips"].n_configs, noise["lpips"].n_runs) == (2, 4)
    assert noise["psnr_y"].sd == pytest.approx(math.sqrt(0.25 / 4))
    assert describe(noise).startswith("lpips: seed SD 0.224 (df 2: 4 runs of 2 configs)")
    assert is_repeat(trials[2]) and not is_repeat(trials[0])
    assert runs_of(trials[0], trials, 0) == [1.0, 1.2] and runs_of(trials[4], trials, 0) == [9.0]


def test_repeats_that_cannot_measure_noise_are_left_out():
    trials = [run(0, [1.0]), run(1, [1.0], seed=0, repeat_of=0),  # same seed: a deterministic copy
              run(2, [2.0]), run(3, [5.0], seed=1, repeat_of=2, state=TrialState.PRUNED),  # not complete
              run(4, [3.0], seed=1, repeat_of=99),  # its first run is not there
              run(5, [4.0], seed=None), run(6, [4.5], seed=None, repeat_of=5)]  # old study: no seeds, taken
    assert [[t.number for t in g] for g in seed_groups(trials)] == [[5, 6]]
    assert noise_floor(trials, ["lpips"])["lpips"].df == 1
    assert noise_floor(trials[:5], ["lpips"])["lpips"] == NoiseFloor("lpips", None, 0, 0, 0)
    assert describe(noise_floor(trials[:5], ["lpips"])) == NO_ESTIMATE


def test_compare_uses_the_t_quantile_and_the_direction():
    noise = NoiseFloor("lpips", 0.01, 1, 1, 2)
    limit = stats.t.ppf(0.975, 1) * 0.01 * math.sqrt(2)  # 12.706 * sqrt(2) * sd for two single runs
    assert threshold(noise) == pytest.approx(limit)
    assert threshold(noise, 1, 2) == pytest.approx(stats.t.ppf(0.975, 1) * 0.01 * math.sqrt(1.5))
    assert compare(0.30, 0.30 + 0.99 * limit, "minimize", noise) == "within noise"
    assert compare(0.30, 0.30 + 1.01 * limit, "minimize", noise) == "better"
    assert compare(0.30, 0.30 + 1.01 * limit, "maximize", noise) == "worse"
    assert compare([0.30, 0.31], 0.5, "minimize", noise) == "better"
    assert compare(0.1, 0.9, "minimize", None) == NO_ESTIMATE
    assert compare(0.1, 0.9, "minimize", NoiseFloor("lpips", None, 0, 0, 0)) == NO_ESTIMATE


@pytest.mark.parametrize("n_baselines", [1, 2, 4])
def test_false_call_rate_of_the_rule_by_simulation(n_baselines):
    """A config exactly as good as a baseline, one run each with seed noise; the noise is pooled from every
    baseline's two seeds, including the one compared (the sweep's situation). Called better or worse in at
    most 5% (+ Monte Carlo error) of 4000 studies, whether against the baseline's mean of runs (as the report
    does) or against two independent single runs."""
    rng = np.random.default_rng(n_baselines)
    sims, sd = 4000, 0.003
    values = 0.3 + sd * rng.standard_normal((sims, n_baselines, 2))  # baseline b, seeds 0 and 1
    config = 0.3 + sd * rng.standard_normal(sims)
    other = 0.3 + sd * rng.standard_normal(sims)
    calls_mean = calls_single = 0
    for s in range(sims):
        trials = [run(2 * b, [values[s, b, 0]]) for b in range(n_baselines)]
        trials += [run(2 * b + 1, [values[s, b, 1]], seed=1, repeat_of=2 * b) for b in range(n_baselines)]
        noise = noise_floor(trials, ["lpips"])["lpips"]
        assert noise.df == n_baselines
        calls_mean += compare(config[s], runs_of(trials[0], trials, 0), "minimize", noise) != "within noise"
        calls_single += compare(config[s], other[s], "minimize", noise) != "within noise"
    rate_mean, rate_single = calls_mean / sims, calls_single / sims
    print(f"\n{n_baselines} repeated baselines (df {n_baselines}): false calls {rate_mean:.4f} against a baseline's "
          f"mean of 2 seeds, {rate_single:.4f} between two independent single runs (nominal 0.05)")
    assert rate_mean <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / sims)
    assert rate_single <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / sims)


def test_the_rule_calls_a_real_difference():
    """Power: a config 8 seed-SDs better than a baseline, four repeated baselines (df 4)."""
    rng = np.random.default_rng(7)
    called = 0
    for _ in range(500):
        pairs = 0.3 + 0.003 * rng.standard_normal((4, 2))
        noise = NoiseFloor("lpips", float(np.sqrt(np.sum((pairs[:, 0] - pairs[:, 1]) ** 2) / 8)), 4, 4, 8)
        called += compare(0.3 - 0.024 + 0.003 * rng.standard_normal(), list(pairs[0]), "minimize", noise) == "better"
    assert called / 500 >= 0.9
