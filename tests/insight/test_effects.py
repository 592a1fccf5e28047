"""The per-layer effect method, checked by simulation: interval coverage and false calls on studies with a known answer.

Each case simulates 200 studies with vectorised numpy, then runs the report's own ``layer_effects`` on each
(duck-typed trials: a layer config and a value, which is all it reads). Rates are printed (`pytest -s`).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from fake_study import DEMO_LIKE, fake_study

from layersearch.insight.effects import (
    EXACT_FIT,
    FEW_DF,
    FEW_ON_A_SIDE,
    MIN_PER_SIDE,
    NOT_SEPARABLE,
    layer_effects,
    network_effects,
)
from layersearch.insight.layer_section import effect_blocks
from layersearch.insight.study_summary import CandidateLayer, StudySummary, summarize_study

LAYERS = ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"]
N_STUDIES = 200


def summary_of(archs=("vgg16",), layers=LAYERS, direction="minimize") -> StudySummary:
    return StudySummary(name="sim", task="SuperResolution", search_space="sim", space_config={},
                        objectives=[("lpips", direction)], trials=[], complete=[], counts={}, random_weights=True,
                        loss_net_weights=["random"], archs=list(archs),
                        candidates=[CandidateLayer("content", a, n) for a in archs for n in layers])


def trials_of(use: np.ndarray, pixel: np.ndarray, archs: np.ndarray | None = None) -> list[SimpleNamespace]:
    """One duck-typed trial per row of ``use`` (n x len(LAYERS) booleans)."""
    out = []
    for i, row in enumerate(use):
        arch = "vgg16" if archs is None else str(archs[i])
        out.append(SimpleNamespace(user_attrs={"layer_config": {
            "loss_net": {"arch": arch, "weights": "random"},
            "content_layers": {n: 1.0 for n, used in zip(LAYERS, row, strict=True) if used}, "style_layers": {},
            "pixel_weight": float(pixel[i]), "tv_weight": 0.0, "criterion": "mse"}}))
    return out


def designs(rng, n_trials: int, p_use: float = 0.4, target_with: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N_STUDIES x n x 5 layer use, N_STUDIES x n pixel weights); layer 0 used by exactly ``target_with`` trials."""
    use = rng.random((N_STUDIES, n_trials, len(LAYERS))) < p_use
    if target_with is not None:
        order = np.argsort(rng.random((N_STUDIES, n_trials)), axis=1)
        use[:, :, 0] = order < target_with
    return use, rng.choice([0.0, 1.0], size=(N_STUDIES, n_trials))


def coverage(n_trials: int, target_with: int, noisy_factor: float = 1.0, seed: int = 0) -> tuple[float, int]:
    """Share of studies whose 90% interval for layer 0 holds its true effect, and how many had one."""
    rng = np.random.default_rng(seed)
    true = np.array([-0.05, 0.03, 0.0, 0.0, -0.02])
    use, pixel = designs(rng, n_trials, target_with=target_with)
    sd = 0.01 * np.where(use[:, :, 0], noisy_factor, 1.0)
    y = 0.3 + use @ true + 0.01 * pixel + sd * rng.standard_normal((N_STUDIES, n_trials))
    summary, hits, with_interval = summary_of(), 0, 0
    for s in range(N_STUDIES):
        row = next(r for r in layer_effects(summary, trials_of(use[s], pixel[s]), y[s]).rows if r.layer == LAYERS[0])
        assert (row.n_with, row.n_without) == (target_with, n_trials - target_with)
        if row.ci_low is not None:
            with_interval += 1
            hits += row.ci_low <= true[0] <= row.ci_high
    return hits / with_interval, with_interval


@pytest.mark.parametrize("n_trials, target_with, noisy_factor, given", [
    (40, MIN_PER_SIDE, 1.0, 1.0),  # one side at the minimum
    (40, MIN_PER_SIDE, 2.0, 1.0),  # ... and those 5 trials twice as noisy as the rest
    # The smallest study that can show an interval, 5 / 5 and df 3: about a fifth of such studies get none,
    # because another layer's column is collinear or a trial is fitted exactly (leverage 1).
    (2 * MIN_PER_SIDE, MIN_PER_SIDE, 1.0, 0.7),
])
def test_intervals_cover_the_true_effect_at_the_minimum_sample_size(n_trials, target_with, noisy_factor, given):
    rate, n = coverage(n_trials, target_with, noisy_factor)
    print(f"\ncoverage of 90% intervals, {n_trials} trials, {target_with} with the layer, noise x{noisy_factor} "
          f"on them: {rate:.3f} over {n} studies with an interval")
    assert rate >= 0.85
    assert n >= given * N_STUDIES  # the interval is given, not withheld, where the data allow


def false_calls(n_trials: int, seed: int = 1, heavy_tails: bool = False) -> tuple[float, float]:
    """Null studies (five candidates used with probability 0.4, noise only): the share of studies in which
    any layer is called helpful or harmful, and the share where any raw 90% interval excludes 0."""
    rng = np.random.default_rng(seed)
    use, pixel = designs(rng, n_trials)
    noise = rng.standard_t(3, (N_STUDIES, n_trials)) if heavy_tails else rng.standard_normal((N_STUDIES, n_trials))
    y = 0.3 + 0.01 * noise
    summary, called, raw = summary_of(), 0, 0
    for s in range(N_STUDIES):
        rows = layer_effects(summary, trials_of(use[s], pixel[s]), y[s]).rows
        called += any(r.verdict in ("helps", "hurts") for r in rows)
        raw += any(r.ci_low is not None and (r.ci_low > 0 or r.ci_high < 0) for r in rows)
    return called / N_STUDIES, raw / N_STUDIES


@pytest.mark.parametrize("n_trials, heavy_tails", [(40, False), (40, True), (16, False)])
def test_null_studies_rarely_call_any_layer(n_trials, heavy_tails):
    called, raw = false_calls(n_trials, heavy_tails=heavy_tails)
    print(f"\nnull studies, {n_trials} trials{', t(3) noise' if heavy_tails else ''}: any layer called in "
          f"{called:.3f} (Holm); any raw 90% interval excluding 0 in {raw:.3f}")
    assert called <= 0.10
    assert raw > called  # the correction is doing the work: uncorrected intervals would "find" layers


@pytest.mark.slow
def test_error_rates_on_2000_studies():
    """The same checks ten times larger, for the figures quoted in insight/effects.py (about 40 s)."""
    global N_STUDIES
    N_STUDIES, before = 2000, N_STUDIES
    try:
        rates = {args: coverage(*args, seed=11) for args in [(40, 5, 1.0), (40, 5, 3.0), (10, 5, 1.0)]}
        nulls = {(n, tails): false_calls(n, seed=12, heavy_tails=tails)
                 for n, tails in [(40, False), (40, True), (16, False), (100, False)]}
    finally:
        N_STUDIES = before
    print("\ncoverage (trials, with, noise factor): rate, studies with an interval:", rates)
    print("null (trials, t(3) noise): any called, any raw interval excluding 0:", nulls)
    assert rates[(40, 5, 1.0)][0] >= 0.88 and rates[(40, 5, 3.0)][0] >= 0.85 and rates[(10, 5, 1.0)][0] >= 0.9
    assert all(called <= 0.08 for called, _ in nulls.values())


def test_a_real_effect_is_found_at_a_moderate_size():
    """Power, so that the checks above do not pass by never calling anything: a 3-sigma effect, 40 trials."""
    rng = np.random.default_rng(2)
    use, pixel = designs(rng, 40)
    y = 0.3 - 0.03 * use[:, :, 1] + 0.01 * rng.standard_normal((N_STUDIES, 40))
    summary = summary_of()
    found = sum(next(r for r in layer_effects(summary, trials_of(use[s], pixel[s]), y[s]).rows
                     if r.layer == LAYERS[1]).verdict == "helps" for s in range(N_STUDIES))
    print(f"\npower: a -3 sd effect on relu2_2 called 'helps' in {found / N_STUDIES:.3f} of 40-trial studies")
    assert found / N_STUDIES >= 0.9


def test_joint_model_separates_layers_that_are_sampled_together():
    """relu3_3 does everything, relu4_3 nothing but is nearly always chosen with relu3_3: a with/without
    comparison credits relu4_3; the joint model does not."""
    rng = np.random.default_rng(4)
    n = 60
    use = rng.random((n, len(LAYERS))) < 0.4
    use[:, 3] = np.where(rng.random(n) < 0.85, use[:, 2], ~use[:, 2])  # relu4_3 follows relu3_3 85% of the time
    y = 0.3 - 0.05 * use[:, 2] + 0.01 * rng.standard_normal(n)
    rows = {r.layer: r for r in layer_effects(summary_of(), trials_of(use, np.zeros(n)), y).rows}
    confounded = rows["relu4_3"].median_with - rows["relu4_3"].median_without
    assert confounded < -0.02  # the naive comparison says relu4_3 helps a lot
    assert rows["relu3_3"].verdict == "helps" and rows["relu4_3"].verdict == "unclear"
    assert rows["relu4_3"].ci_low < 0 < rows["relu4_3"].ci_high


def test_too_few_trials_gives_no_interval_and_says_so():
    use = np.zeros((12, len(LAYERS)), dtype=bool)
    use[:4, 0] = True  # relu1_2: 4 with, 8 without
    use[:, 1] = np.arange(12) % 2 == 0
    y = 0.3 + 0.01 * np.random.default_rng(0).standard_normal(12)
    rows = {r.layer: r for r in layer_effects(summary_of(), trials_of(use, np.zeros(12)), y).rows}
    assert rows["relu1_2"].verdict == "too few trials" and rows["relu1_2"].ci_low is None
    assert rows["relu1_2"].note == "only 4 trials with it (5 needed on each side)"
    assert rows["relu5_3"].note == "used in none of the 12 trials"
    assert rows["relu1_2"].why == rows["relu5_3"].why == FEW_ON_A_SIDE
    assert rows["relu2_2"].ci_low is not None and rows["relu2_2"].note == ""  # 6 / 6, enough residual df


def test_a_layer_with_enough_trials_but_no_interval_says_which_trial_stops_it():
    study = fake_study(None, "demo", 10, metrics=("lpips",), baselines=False, configs=DEMO_LIKE)
    table = layer_effects(summarize_study(study))
    assert (table.n_trials, table.n_terms, table.df, table.tested) == (10, 6, 4, 0)
    rows = {r.layer: r for r in table.rows}
    deep = rows["relu5_3"]
    assert (deep.n_with, deep.n_without) == (5, 5) and deep.difference is not None and deep.ci_low is None
    assert deep.why == EXACT_FIT
    assert deep.note == ("the estimate depends on trial #5, whose mix of layers and settings no other trials "
                         "reproduce, so the model fits it exactly and cannot measure its noise")
    assert rows["relu1_2"].note == "only 3 trials without it (5 needed on each side)"
    assert rows["relu4_3"].note == "only 1 trial with it (5 needed on each side)"
    assert all(r.note for r in table.rows)  # every row without an interval says why

    # The reason is the real one: a second trial with #5's config gives relu5_3 an interval.
    again = fake_study(None, "again", 11, metrics=("lpips",), baselines=False, configs=[*DEMO_LIKE, DEMO_LIKE[5]])
    row = next(r for r in layer_effects(summarize_study(again)).rows if r.layer == "relu5_3")
    assert row.ci_low is not None and row.note == "" and row.why == ""


def test_too_few_residual_degrees_of_freedom_gives_the_numbers():
    """10 trials, 9 terms (5 layers, pixel and TV weight, two criteria): df 1, below MIN_DF."""
    rng = np.random.default_rng(3)
    use = rng.random((10, len(LAYERS))) < 0.5
    use[:, 0] = np.arange(10) < 5
    trials = trials_of(use, rng.choice([0.0, 1.0], size=10))
    for i, t in enumerate(trials):
        t.user_attrs["layer_config"].update(tv_weight=float(rng.random()), criterion=("mse", "l1")[i % 2])
    table = layer_effects(summary_of(), trials, 0.3 + 0.01 * rng.standard_normal(10))
    assert (table.n_terms, table.df, table.tested) == (9, 1, 0)
    row = next(r for r in table.rows if r.layer == "relu1_2")
    assert row.ci_low is None and row.why == FEW_DF and row.verdict == "too few trials"
    assert row.note == "the joint model has too few residual degrees of freedom (10 trials, 9 terms: df 1, 3 needed)"
    text = " ".join(getattr(block, "text", "") for block in effect_blocks(summary_of(), table, "none"))
    assert "Holm-adjusted over the 0 layers" not in text
    assert ("no layer could be tested: 4 had fewer than 5 trials with it or without it; for 1, the joint model of 9 "
            "terms on 10 trials leaves 1 residual degree of freedom, fewer than the 3 needed") in text


def test_a_layer_always_chosen_with_another_is_named():
    use = np.zeros((12, len(LAYERS)), dtype=bool)
    use[:, 0] = use[:, 1] = np.arange(12) % 2 == 0  # relu1_2 and relu2_2 always together
    use[:, 2] = np.arange(12) % 3 == 0
    y = 0.3 + 0.01 * np.random.default_rng(0).standard_normal(12)
    rows = {r.layer: r for r in layer_effects(summary_of(), trials_of(use, np.zeros(12)), y).rows}
    assert rows["relu2_2"].why == NOT_SEPARABLE and rows["relu2_2"].difference is None
    assert rows["relu2_2"].note == "used in exactly the same trials as relu1_2, so the two cannot be told apart"


def test_layers_of_each_network_are_their_own_candidates_and_networks_are_compared():
    """Two networks with the same layer names: relu2_2 helps only on vgg19; vgg19 is better overall."""
    rng = np.random.default_rng(5)
    n = 80
    archs = np.where(np.arange(n) % 2 == 0, "vgg16", "vgg19")
    use = rng.random((n, len(LAYERS))) < 0.5
    y = 0.3 - 0.05 * (use[:, 1] & (archs == "vgg19")) - 0.02 * (archs == "vgg19") + 0.005 * rng.standard_normal(n)
    summary = summary_of(archs=("vgg16", "vgg19"))
    summary.complete = [SimpleNamespace(values=[v], **vars(t)) for t, v in zip(trials_of(use, np.zeros(n), archs), y,
                                                                                 strict=True)]
    rows = {(r.arch, r.layer): r for r in layer_effects(summary).rows}
    assert rows[("vgg19", "relu2_2")].verdict == "helps"
    assert rows[("vgg16", "relu2_2")].verdict == "unclear"
    assert rows[("vgg16", "relu2_2")].n_with + rows[("vgg16", "relu2_2")].n_without == n // 2
    networks = {r.arch: r for r in network_effects(summary).rows}
    assert networks["vgg19"].verdict == "better" and networks["vgg16"].verdict == "worse"
    assert networks["vgg19"].p_adjusted == networks["vgg19"].p_value  # two networks: one question, no adjustment
