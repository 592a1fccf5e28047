"""confirm's race (insight/confirm/race.py) and its blocked tests (insight/stats.py), without training: verdicts on
known scores, and error rates measured by simulating races (fixed numpy seeds, so the numbers are exact repeats).

The simulated scores follow the model the tests assume, with every effect present:
    x[c, s, i] = shift_c + a_s + b_i + g_cs + e_csi
seed and image effects (a, b; SD 3, large against the noise, as PSNR varies across images), one training run's
luck g (SD ``run_sd``, shared by all the images that run scores) and per-image noise e (SD 1). "One noise SD" is
the SD of one config's score in one block, sqrt(run_sd^2 + 1).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from layersearch.insight.confirm.race import race
from layersearch.insight.stats import blocked_anova, blocked_pair

ALPHA = 0.05
N_RACES = 1000
# Monte-Carlo slack: 2.33 binomial standard errors (one-sided 99%) at the stated rate and N_RACES races.
def slack(rate: float) -> float:
    return 2.33 * math.sqrt(rate * (1 - rate) / N_RACES)


def simulate(rng, shifts, n_seeds, n_images, run_sd=0.5):
    n_c = len(shifts)
    x = (np.asarray(shifts, dtype=float)[:, None, None] + rng.normal(0, 3, (1, n_seeds, 1))
         + rng.normal(0, 3, (1, 1, n_images)) + rng.normal(0, run_sd, (n_c, n_seeds, 1))
         + rng.normal(0, 1, (n_c, n_seeds, n_images)))
    return x


def as_scores(x):
    return {f"c{c}": {s: list(x[c, s]) for s in range(x.shape[1])} for c in range(x.shape[0])}


def drop_rate(shifts, n_seeds, n_images, run_sd=0.5, seed=0):
    """Share of N_RACES races (lower is better) that drop at least one config; and the runs they saved."""
    rng = np.random.default_rng(seed)
    configs = [f"c{c}" for c in range(len(shifts))]
    drops = saved = 0
    for _ in range(N_RACES):
        state = race(as_scores(simulate(rng, shifts, n_seeds, n_images, run_sd)), configs, list(range(n_seeds)),
                     lower_is_better=True, alpha=ALPHA, first_test=5)
        assert state.finished
        drops += any(v.status == "worse" for v in state.verdicts.values())
        saved += sum(n_seeds - v.seeds for v in state.verdicts.values())
    return drops / N_RACES, saved


# --- error rates ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n_seeds", "n_images", "run_sd", "measured"), [
    (3, 10, 1.0, 0.047),  # per-image blocks, strong run luck: the hardest case for the tests' approximations
    (5, 4, 0.5, 0.002),
    (8, 1, 0.5, 0.010),  # a training that reports means: the blocks are the seeds alone
])
def test_a_race_of_equal_configs_drops_none_at_more_than_alpha(n_seeds, n_images, run_sd, measured):
    rate, _ = drop_rate([0.0] * 4, n_seeds, n_images, run_sd)
    assert rate == pytest.approx(measured, abs=1e-9)  # the seeded simulation repeats exactly
    assert rate <= ALPHA + slack(ALPHA)


@pytest.mark.parametrize(("n_seeds", "n_images", "measured"), [(3, 10, 0.335), (5, 4, 0.221), (8, 1, 0.252)])
def test_a_difference_of_one_noise_sd_is_found_with_the_measured_power(n_seeds, n_images, measured):
    one_sd = math.sqrt(0.5 ** 2 + 1)
    rate, saved = drop_rate([0.0, one_sd], n_seeds, n_images, seed=1)
    assert rate >= measured - slack(measured)
    assert saved > 0  # the dropped config's remaining seeds were not trained


def test_rank_tests_over_seed_image_pairs_read_run_luck_as_a_difference():
    # Why the race does not use Friedman over (seed, image) blocks: equal configs, 3 seeds x 10 images, run luck
    # SD 1. Friedman's test calls a difference in most such races (measured 0.647); the blocked quasi-F keeps near
    # its level (measured 0.063 at one look: Satterthwaite's df run slightly liberal with 3 seeds).
    rng = np.random.default_rng(2)
    friedman = quasi_f = 0
    for _ in range(300):
        x = simulate(rng, [0.0] * 4, 3, 10, run_sd=1.0)
        friedman += stats.friedmanchisquare(*x.reshape(4, -1)).pvalue < ALPHA
        quasi_f += blocked_anova(x).p_value < ALPHA
    assert friedman / 300 > 0.5 and quasi_f / 300 < ALPHA + 0.035


# --- the tests' formulas ------------------------------------------------------------------------------------------


def test_with_one_image_the_pair_test_is_the_paired_t_over_seeds():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, (6, 1)), rng.normal(0.5, 1, (6, 1))
    difference, test = blocked_pair(a, b)
    expected = stats.ttest_rel(a[:, 0], b[:, 0])
    assert difference == pytest.approx(float((a - b).mean()))
    assert test.p_value == pytest.approx(expected.pvalue)
    assert test.statistic == pytest.approx(expected.statistic ** 2)
    assert (test.seeds, test.images, test.blocks) == (6, 1, 6)


def test_with_one_image_the_omnibus_is_the_repeated_measures_anova():
    x = np.array([[[1.0], [2.0], [3.5]], [[1.5], [2.2], [4.5]], [[0.8], [2.9], [3.1]]])  # 3 configs x 3 seeds
    test = blocked_anova(x)
    # By hand: SS_configs = 3 * sum((m_c - m)^2), SS_error = the config x seed interaction.
    m_c, m_s, m = x[:, :, 0].mean(1), x[:, :, 0].mean(0), x.mean()
    ss_c = 3 * ((m_c - m) ** 2).sum()
    ss_e = ((x[:, :, 0] - m_c[:, None] - m_s[None, :] + m) ** 2).sum()
    f = (ss_c / 2) / (ss_e / 4)
    assert test.statistic == pytest.approx(f) and test.df == (2.0, 4.0)
    assert test.p_value == pytest.approx(stats.f.sf(f, 2, 4))


def test_undefined_tests_say_so():
    assert blocked_anova(np.zeros((3, 1, 5))).p_value is None  # one seed: a run's luck cannot be measured
    assert blocked_anova(np.ones((2, 3, 2))).p_value == 1.0  # identical scores: no difference
    same_shift = np.ones((2, 3, 2)) + np.array([0.0, 1.0])[:, None, None]
    assert blocked_anova(same_shift).p_value == 0.0  # a constant gap, no noise at all


# --- verdicts -----------------------------------------------------------------------------------------------------


def clear_race(n_seeds=5, n_images=4):
    # c1 is far worse than c0 (lower is better); c2 is c0's equal.
    rng = np.random.default_rng(4)
    return simulate(rng, [0.0, 5.0, 0.0], n_seeds, n_images)


def test_a_config_far_worse_is_dropped_before_the_last_seed_and_trains_no_more():
    scores = as_scores(clear_race())
    configs, seeds = ["c0", "c1", "c2"], [0, 1, 2, 3, 4]
    state = race(scores, configs, seeds, lower_is_better=True, alpha=ALPHA, first_test=5)
    assert state.finished and state.looks == 4 and state.level == pytest.approx(ALPHA / 4)
    worse = state.verdicts["c1"]
    assert (worse.status, worse.round, worse.seeds, worse.images, worse.blocks) == ("worse", 3, 4, 4, 16)
    assert worse.versus in ("c0", "c2") and worse.p_value < state.level and worse.difference > 3
    assert state.alive == ["c0", "c2"]
    best = next(c for c, v in state.verdicts.items() if v.status == "best")
    other = next(c for c, v in state.verdicts.items() if v.status == "open")
    assert {best, other} == {"c0", "c2"} and state.verdicts[other].versus == best
    assert state.verdicts[other].blocks == 20 and state.verdicts[best].blocks == 20

    # The same race, its results arriving: c1's later seeds are never asked for.
    partial = {c: {s: v for s, v in by_seed.items() if s < 4 or c != "c1"} for c, by_seed in scores.items()}
    assert race(partial, configs, seeds, True, ALPHA, 5).verdicts["c1"].status == "worse"
    first_round = {c: {0: by_seed[0]} for c, by_seed in scores.items()}
    waiting = race(first_round, configs, seeds, True, ALPHA, 5)
    assert (waiting.finished, waiting.next_round, waiting.alive, waiting.verdicts) == (False, 1, configs, {})


def test_no_config_is_dropped_before_first_test_blocks_or_two_seeds():
    scores = as_scores(clear_race(n_seeds=3, n_images=1))  # seed means only
    state = race(scores, ["c0", "c1", "c2"], [0, 1, 2], True, ALPHA, first_test=5)
    assert state.looks == 0 and all(v.status != "worse" for v in state.verdicts.values())
    assert state.verdicts["c1"].status == "open" and state.verdicts["c1"].blocks == 3
    one_seed = race(as_scores(clear_race(n_seeds=1, n_images=20)), ["c0", "c1", "c2"], [0], True, ALPHA, 5)
    assert one_seed.looks == 0 and one_seed.verdicts["c1"].p_value is None


def test_higher_is_better_and_a_diverged_run_leaves_the_race():
    x = -clear_race()  # now c1 is far worse when higher is better
    scores = as_scores(x)
    del scores["c2"][3], scores["c2"][4]
    state = race(scores, ["c0", "c1", "c2"], [0, 1, 2, 3, 4], lower_is_better=False, alpha=ALPHA,
                 first_test=5, failed={"c2": 3})
    assert state.verdicts["c1"].status == "worse" and state.verdicts["c1"].difference < 0
    failed = state.verdicts["c2"]
    assert (failed.status, failed.round, failed.seeds) == ("failed", 3, 3)
    # c0 alone is left after c1's drop and c2's failure: it is the best on the seeds it ran.
    assert state.verdicts["c0"].status == "best" and state.alive == ["c0"]


def test_runs_of_unequal_image_counts_fall_back_to_seed_means():
    scores = {"a": {0: [1.0, 2.0], 1: [1.0, 2.0]}, "b": {0: [1.5], 1: [1.4]}}
    state = race(scores, ["a", "b"], [0, 1], True, ALPHA, 5)
    assert state.images == 1 and state.verdicts["b"].blocks == 2


def test_a_config_raced_against_itself_is_not_distinguishable_with_p_one():
    # The offline demo's confirm raced five copies of the pixel loss: identical scores gave p=0 from rounding noise.
    a = np.array([[0.843049, 0.842811], [0.840812, 0.840866], [0.846925, 0.846994]])
    difference, test = blocked_pair(a, a.copy())
    assert difference == 0.0 and test.p_value == 1.0
