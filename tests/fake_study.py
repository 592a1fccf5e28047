"""Studies with a known answer, built in seconds without training: for the report's tests and benchmark.

Trials carry what `layersearch sweep` stores (search/loop/study.py `_check_same_study`, search/loop/runner.py): the
study attributes `objectives`, `search_space`, `task`, `search_space_config`, `random_weights` (and `lpips`,
"net/weights", when asked), and per trial the `layer_config` and `seed` user attributes, the primary
objective at every evaluation step (Optuna's intermediate values with one objective, the user attribute
`intermediate` with several; pruned trials stop early), `baseline` for literature configs, `fail_reason` for
failed ones. With `repeats=True` every baseline is run a second time with another seed, as the sweep's
noise floor does: same `baseline`, `seed` 1, `repeat_of` the first run's number.
"""

from __future__ import annotations

import datetime

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

SR_CANDIDATES = ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"]
SR_SPACE = {
    "name": "sr_relu", "arch": "vgg16",
    "content": {"candidates": SR_CANDIDATES, "min_layers": 0, "max_layers": 3, "weight": {"low": 0.1, "high": 10.0}},
    "style": None, "pixel_weight": [0.0, 1.0], "tv_weight": 0.0, "criterion": "mse",
    "baselines": ["johnson_sr", "srgan_vgg54", "esrgan", "pixel"],
}
BASELINES = {"johnson_sr": ({"relu2_2": 1.0}, 0.0), "pixel": ({}, 1.0)}
STEPS = (1, 2, 3)  # evaluation steps of a complete trial; pruned trials stop after the first or second
# The offline demo's case as `configs` (10 complete trials, 6 terms, df 4): relu5_3 has 5 trials a side yet no
# interval, because its estimate depends on trial #5 (with baselines=False), which the model fits exactly;
# pixel_weight = 1 - [relu3_3 used], so the model drops it.
DEMO_LIKE = [({"relu1_2": 1.0, "relu2_2": 1.0}, 1.0), ({"relu1_2": 1.0, "relu2_2": 1.0}, 1.0),
             ({"relu1_2": 1.0, "relu5_3": 1.0}, 1.0), ({"relu1_2": 1.0, "relu2_2": 1.0}, 1.0),
             ({"relu1_2": 1.0, "relu2_2": 1.0, "relu3_3": 1.0, "relu5_3": 1.0}, 0.0),
             ({"relu1_2": 1.0, "relu2_2": 1.0, "relu5_3": 1.0}, 1.0),
             ({"relu1_2": 1.0, "relu2_2": 1.0, "relu3_3": 1.0, "relu4_3": 1.0}, 0.0),
             ({"relu5_3": 1.0}, 1.0), ({"relu5_3": 1.0}, 1.0), ({"relu2_2": 1.0}, 1.0)]


def layer_config(layers: dict[str, float], pixel: float, weights: str = "random", arch: str = "vgg16") -> dict:
    return {"loss_net": {"arch": arch, "weights": weights}, "content_layers": layers, "style_layers": {},
            "content_weight": 1.0, "style_weight": 0.0, "pixel_weight": pixel, "tv_weight": 0.0, "criterion": "mse"}


def _params(layers: dict[str, float], pixel: float, candidates, arch: str | None) -> tuple[dict, dict]:
    params, dists = {}, {}
    if arch is not None:
        params["arch"] = arch
        dists["arch"] = CategoricalDistribution(sorted(candidates))
    for name in candidates.get(arch, SR_CANDIDATES) if arch else SR_CANDIDATES:
        params[f"use_{name}"] = name in layers
        dists[f"use_{name}"] = CategoricalDistribution([True, False])
        if name in layers:
            params[f"w_{name}"] = layers[name]
            dists[f"w_{name}"] = FloatDistribution(0.1, 10.0, log=True)
    params["pixel_weight"] = pixel
    dists["pixel_weight"] = CategoricalDistribution([0.0, 1.0])
    return params, dists


def fake_study(storage, name: str, n_complete: int, *, metrics=("lpips", "psnr_y"), effect_layer: str = "relu2_2",
               effect: float = -0.05, noise: float = 0.01, n_pruned: int = 0, n_failed: int = 0,
               baselines: bool = True, seed: int = 0, repeats: bool = False, seed_noise: float | None = None,
               archs: dict[str, list[str]] | None = None, arch_effect: dict[str, float] | None = None,
               seconds: dict[str, float] | None = None, lpips: str | None = None,
               configs: list[tuple[dict[str, float], float]] | None = None) -> optuna.Study:
    """A study of ``n_complete`` complete SR trials where using ``effect_layer`` shifts lpips by ``effect``.

    lpips = 0.30 + effect * [effect_layer used] + arch_effect[arch] + noise * N(0, 1);
    psnr_y = 25 - 10 (lpips - 0.30) + noise. Every other layer is used at random (p = 0.5, weights log-uniform
    0.1..10) and has no effect. Intermediate values: the primary objective + 0.1 / step at steps 1, 2, 3.

    Args:
        repeats: run each baseline again with seed 1 (``repeat_of``), its scores moved by ``seed_noise``
            (default ``noise``) times N(0, 1).
        archs: ``{arch: candidates}`` to search several loss networks (the space's ``arch`` becomes their
            list); trials pick one uniformly. ``arch_effect``: lpips shift per network.
        seconds: per network, how long each complete trial took (Optuna's start and end times).
        lpips: the study attribute ``lpips`` ("alex/imagenet"), as the sweep records it.
        configs: ``(layers, pixel_weight)`` of the first trials after the baselines, in order, instead of
            random ones: a fixed design for a case the random ones hit only by chance.
    """
    directions = {"lpips": "minimize", "psnr_y": "maximize", "ssim_y": "maximize"}
    study = optuna.create_study(study_name=name, storage=storage, directions=[directions[m] for m in metrics])
    space = dict(SR_SPACE)
    if archs:
        space["arch"] = list(archs)
        space["content"] = {**SR_SPACE["content"], "candidates": {a: list(c) for a, c in archs.items()}}
    study.set_user_attr("objectives", list(metrics))
    study.set_user_attr("search_space", "sr_relu")
    study.set_user_attr("task", "layersearch.trial.tasks.SuperResolution")
    study.set_user_attr("search_space_config", space)
    study.set_user_attr("random_weights", True)
    if lpips:
        study.set_user_attr("lpips", lpips)
    rng = np.random.default_rng(seed)
    fixed = [(layers, pixel, "vgg16", None) for layers, pixel in configs or []]
    configs = ([(*BASELINES[b], "vgg16", b) for b in BASELINES] if baselines else []) + fixed
    while len(configs) < n_complete + n_pruned + n_failed:
        arch = str(rng.choice(list(archs))) if archs else "vgg16"
        names = archs[arch] if archs else SR_CANDIDATES
        layers = {n: float(np.exp(rng.uniform(np.log(0.1), np.log(10.0)))) for n in names if rng.random() < 0.5}
        pixel = float(rng.choice([0.0, 1.0])) if layers else 1.0
        configs.append((layers, pixel, arch, None))

    def scores(layers, arch, sd):
        lpips_ = 0.30 + effect * (effect_layer in layers) + (arch_effect or {}).get(arch, 0.0)
        lpips_ += sd * rng.standard_normal()
        return {"lpips": lpips_, "psnr_y": 25 - 10 * (lpips_ - 0.30) + sd * rng.standard_normal(),
                "ssim_y": 0.8 - (lpips_ - 0.3)}

    def trial(layers, pixel, arch, baseline, values, state, steps, **extra):
        params, dists = _params(layers, pixel, archs or {}, arch if archs else None)
        attrs = {"layer_config": layer_config(layers, pixel, arch=arch), "seed": 0, **extra}
        if baseline:
            attrs["baseline"] = baseline
        curve = {s: values[metrics[0]] + 0.1 / s for s in steps}  # the primary objective
        if state == TrialState.FAIL:
            attrs["fail_reason"] = "non-finite loss at step 3"
            curve = {}
        if len(metrics) > 1 and curve:
            attrs["intermediate"] = {str(s): v for s, v in curve.items()}
        frozen = optuna.trial.create_trial(
            params=params, distributions=dists, user_attrs=attrs, state=state,
            values=[values[m] for m in metrics] if state == TrialState.COMPLETE else None,
            intermediate_values=curve if len(metrics) == 1 else None)
        took = (seconds or {}).get(arch)
        if took is not None:
            frozen.datetime_start = frozen.datetime_complete - datetime.timedelta(seconds=took)
        return frozen

    trials = []
    for i, (layers, pixel, arch, baseline) in enumerate(configs):
        values = scores(layers, arch, noise)
        if i < n_complete:
            trials.append(trial(layers, pixel, arch, baseline, values, TrialState.COMPLETE, STEPS))
        elif i < n_complete + n_pruned:
            trials.append(trial(layers, pixel, arch, baseline, values, TrialState.PRUNED, STEPS[: 1 + i % 2]))
        else:
            trials.append(trial(layers, pixel, arch, baseline, values, TrialState.FAIL, ()))
    if repeats:
        sd = noise if seed_noise is None else seed_noise
        for number, (layers, pixel, arch, baseline) in enumerate(configs[:n_complete]):
            if baseline:
                values = {m: v + sd * rng.standard_normal() for m, v in zip(metrics, trials[number].values, strict=True)}
                trials.append(trial(layers, pixel, arch, baseline, values, TrialState.COMPLETE, STEPS, seed=1,
                                    repeat_of=number))
    study.add_trials(trials)
    return study
