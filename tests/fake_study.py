"""Studies with a known answer, built in seconds without training: for the report's tests and benchmark.

Trials carry what `layersearch sweep` stores (search/study.py `_check_same_study`, search/runner.py): the
study attributes `objectives`, `search_space`, `task`, `search_space_config`, `random_weights`, and per
trial the `layer_config` user attribute (`baseline` for literature configs, `intermediate` for pruned
multi-objective trials, `fail_reason` for failed ones).
"""

from __future__ import annotations

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


def layer_config(layers: dict[str, float], pixel: float, weights: str = "random") -> dict:
    return {"loss_net": {"arch": "vgg16", "weights": weights}, "content_layers": layers, "style_layers": {},
            "content_weight": 1.0, "style_weight": 0.0, "pixel_weight": pixel, "tv_weight": 0.0, "criterion": "mse"}


def _params(layers: dict[str, float], pixel: float) -> tuple[dict, dict]:
    params, dists = {}, {}
    for name in SR_CANDIDATES:
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
               baselines: bool = True, seed: int = 0) -> optuna.Study:
    """A study of ``n_complete`` complete SR trials where using ``effect_layer`` shifts lpips by ``effect``.

    lpips = 0.30 + effect * [effect_layer used] + noise * N(0, 1); psnr_y = 25 - 10 (lpips - 0.30) + noise.
    Every other layer is used at random (p = 0.5, weights log-uniform 0.1..10) and has no effect.
    """
    directions = {"lpips": "minimize", "psnr_y": "maximize", "ssim_y": "maximize"}
    study = optuna.create_study(study_name=name, storage=storage, directions=[directions[m] for m in metrics])
    study.set_user_attr("objectives", list(metrics))
    study.set_user_attr("search_space", "sr_relu")
    study.set_user_attr("task", "layersearch.trial.tasks.SuperResolution")
    study.set_user_attr("search_space_config", SR_SPACE)
    study.set_user_attr("random_weights", True)
    rng = np.random.default_rng(seed)
    configs = [(BASELINES[b], b) for b in BASELINES] if baselines else []
    while len(configs) < n_complete + n_pruned + n_failed:
        layers = {n: float(np.exp(rng.uniform(np.log(0.1), np.log(10.0)))) for n in SR_CANDIDATES if rng.random() < 0.5}
        pixel = float(rng.choice([0.0, 1.0])) if layers else 1.0
        configs.append(((layers, pixel), None))
    trials = []
    for i, ((layers, pixel), baseline) in enumerate(configs):
        lpips = 0.30 + effect * (effect_layer in layers) + noise * rng.standard_normal()
        scores = {"lpips": lpips, "psnr_y": 25 - 10 * (lpips - 0.30) + noise * rng.standard_normal(),
                  "ssim_y": 0.8 - (lpips - 0.3)}
        params, dists = _params(layers, pixel)
        attrs = {"layer_config": layer_config(layers, pixel)}
        if baseline:
            attrs["baseline"] = baseline
        if i < n_complete:
            trials.append(optuna.trial.create_trial(params=params, distributions=dists, user_attrs=attrs,
                                                    values=[scores[m] for m in metrics]))
        elif i < n_complete + n_pruned:
            if len(metrics) > 1:
                attrs["intermediate"] = {"2": lpips + 0.1}
                trials.append(optuna.trial.create_trial(params=params, distributions=dists, user_attrs=attrs,
                                                        state=TrialState.PRUNED))
            else:
                trials.append(optuna.trial.create_trial(params=params, distributions=dists, user_attrs=attrs,
                                                        state=TrialState.PRUNED, intermediate_values={2: lpips + 0.1}))
        else:
            attrs["fail_reason"] = "non-finite loss at step 3"
            trials.append(optuna.trial.create_trial(params=params, distributions=dists, user_attrs=attrs,
                                                    state=TrialState.FAIL))
    study.add_trials(trials)
    return study
