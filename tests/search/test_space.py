from __future__ import annotations

import optuna
import pytest

from layersearch.config import compose_config, literature_loss, to_container
from layersearch.lossnet.loss import LossConfig
from layersearch.search.loop import Infeasible, SearchSpace, SpaceError


def space(name: str = "sr_relu", **changes) -> SearchSpace:
    cfg = to_container(compose_config([f"search_space={name}"]))["search_space"]
    cfg.update(changes)
    return SearchSpace.from_config(cfg, weights="random")


@pytest.mark.parametrize("name", ["sr_relu", "sr_vgg19_pre_post", "style_johnson", "sr_networks", "sr_lite0"])
def test_shipped_spaces_sample_valid_configs(name):
    s = space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    feasible = 0
    for _ in range(30):
        trial = study.ask()
        try:
            config = s.suggest(trial)
        except Infeasible:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        feasible += 1
        # The sampled config is a valid layer config, and the parameter names follow the contract.
        LossConfig.from_mapping(config.to_dict())
        for layer in config.content_layers:
            assert trial.params.get(f"use_{layer}", True) is True  # absent = forced by min_layers
        for layer in config.style_layers:
            assert trial.params.get(f"use_style_{layer}", True) is True
        study.tell(trial, 0.0)
    assert feasible >= 25


def test_param_names_and_round_trip_through_fixed_trial():
    s = space("style_johnson")
    config = LossConfig.from_mapping(
        {**literature_loss("johnson_style"), "loss_net": {"arch": "vgg16", "weights": "random"}}
    )
    params = s.params_for(config)
    assert params["use_relu3_3"] is True and params["use_relu2_2"] is False
    assert params["use_style_relu1_2"] is True and params["w_style_relu1_2"] == 1.0
    assert params["content_style_ratio"] == pytest.approx(1e-4)
    again = s.suggest(optuna.trial.FixedTrial(params))
    assert again.content_layers == config.content_layers
    assert again.style_layers == config.style_layers
    assert again.style_weight == pytest.approx(config.style_weight)
    assert again.tv_weight == config.tv_weight


def test_baselines_fit_only_where_they_can():
    s = space("sr_relu")
    johnson = LossConfig.from_mapping(literature_loss("johnson_sr"))
    assert s.params_for(johnson)["use_relu2_2"] is True
    with pytest.raises(ValueError, match="vgg19"):
        s.params_for(LossConfig.from_mapping(literature_loss("esrgan")))
    pre_post = space("sr_vgg19_pre_post")
    esrgan = pre_post.params_for(LossConfig.from_mapping(literature_loss("esrgan")))
    assert esrgan["use_conv5_4"] is True and esrgan["criterion"] == "l1"


@pytest.mark.parametrize("name", ["johnson_sr", "srgan_vgg54", "esrgan", "pixel", "johnson_style", "lite0_shallow",
                                  "lite0_deep"])
def test_literature_reader_matches_hydra(name):
    cfg = to_container(compose_config([f"loss={name}"]))
    assert literature_loss(name) == {"loss_net": cfg["loss_net"], **cfg["loss"]}


def test_min_and_max_layers_always_hold():
    s = space(
        "sr_relu",
        content={
            "candidates": ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"],
            "min_layers": 2,
            "max_layers": 3,
            "weight": 1.0,
        },
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    counts = set()
    for _ in range(60):
        trial = study.ask()
        config = s.suggest(trial)
        counts.add(len(config.content_layers))
        # Every candidate gets its turn first in some trial: no layer is favoured by its place.
        study.tell(trial, 0.0)
    assert counts == {2, 3}
    firsts = {layer for t in study.trials for layer in t.params if layer.startswith("use_")}
    assert len(firsts) == 5
    # All flags say yes: only max_layers are taken. All say no: min_layers are forced.
    yes = {f"use_{n}": True for n in ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"]}
    assert len(s.suggest(optuna.trial.FixedTrial({**yes, "pixel_weight": 0.0})).content_layers) == 3
    no = {k: False for k in yes}
    assert len(s.suggest(optuna.trial.FixedTrial({**no, "pixel_weight": 0.0})).content_layers) == 2


def test_a_config_without_layers_takes_the_pixel_term_and_nothing_to_optimise_is_infeasible():
    no = {f"use_{n}": False for n in ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"]}
    # pixel_weight: [0.0, 1.0]: without layers it is 1, not asked (a sampler drawn to the pixel-only region would
    # otherwise keep proposing pixel_weight 0 there, and such trials teach TPE nothing).
    config = space("sr_relu").suggest(optuna.trial.FixedTrial({**no, "pixel_weight": 0.0}))
    assert config.layers == [] and config.pixel_weight == 1.0
    s = space("sr_relu")
    pixel = s.params_for(LossConfig.from_mapping(literature_loss("pixel")))
    assert "pixel_weight" not in pixel and s.suggest(optuna.trial.FixedTrial(pixel)).pixel_weight == 1.0
    # A space that fixes the pixel weight at 0 still refuses the empty config.
    with pytest.raises(Infeasible, match="nothing to optimise"):
        space("sr_relu", pixel_weight=0.0).suggest(optuna.trial.FixedTrial(no))


def test_tpe_drawn_to_the_pixel_loss_never_samples_an_empty_config():
    # The offline demo's failure: the pixel-only trials score best, TPE samples near them.
    s = space("sr_relu")
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=4))
    for _ in range(40):
        trial = study.ask()
        config = s.suggest(trial)  # Infeasible here would fail the test
        study.tell(trial, 1.0 if config.layers else 0.0)  # minimise: no layers is best
    assert sum(not t.params.get("use_relu2_2", True) for t in study.trials) > 0


def test_arch_search_is_conditional():
    s = space(
        "sr_relu",
        arch=["vgg16", "vgg19"],
        content={
            "candidates": {"vgg16": ["relu2_2"], "vgg19": ["relu5_4"]},
            "min_layers": 1,
            "max_layers": 1,
            "weight": 1.0,
        },
    )
    config = s.suggest(optuna.trial.FixedTrial({"arch": "vgg19", "use_relu5_4": True, "pixel_weight": 0.0}))
    assert config.arch == "vgg19" and config.content_layers == {"relu5_4": 1.0}


def test_grid_needs_discrete_space():
    with pytest.raises(SpaceError, match="grid needs a space without"):
        space("sr_relu").grid()
    grid = space(
        "sr_relu",
        content={
            "candidates": ["relu1_2", "relu2_2"],
            "min_layers": 0,
            "max_layers": 2,
            "weight": [1.0, 2.0],
        },
    ).grid()
    assert grid["use_relu1_2"] == [True, False] and grid["w_relu2_2"] == [1.0, 2.0]
    assert grid["pixel_weight"] == [0.0, 1.0]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"content": {"candidates": ["relu9_9"]}}, r"unknown layer 'relu9_9'"),
        ({"content": {"candidates": ["relu5_4"]}}, r"relu5_4.*exists in vgg19"),
        ({"arch": "resnet34"}, r"search_space.arch: unknown loss network architecture"),
        (
            {"arch": "resnet18", "content": {"candidates": {"resnet18": ["layer1"], "resnet34": ["layer1"]}}},
            r"candidates names resnet34, not a known loss network; choose from vgg11, .*, efficientnet_lite0 \(or declare "
            r"it: loss_net/<name>.yaml in your --config-dir\)$",
        ),
        ({"arch": ["resnet18", "vgg16"], "content": {"candidates": {"resnet18": ["layer1"]}}},
         r"candidates has no list for vgg16"),
        ({"arch": "resnet18", "content": {"candidates": {"resnet18": ["relu2_2"]}}},
         r"unknown layer 'relu2_2' for resnet18 .*valid names: relu, maxpool"),
        (
            {"content": {"candidates": ["relu1_2"], "min_layers": 2, "max_layers": 3}},
            r"min_layers <= the 1 candidates",
        ),
        (
            {"content": {"candidates": ["relu1_2"], "weight": {"low": 2.0, "high": 1.0}}},
            r"empty or invalid range",
        ),
        ({"content": {"candidates": []}}, r"candidates is empty"),
        ({"criterion": "huber"}, r"criterion: unknown"),
        ({"content": {"candidates": ["relu1_2"], "typo": 1}}, r"unknown key\(s\) typo"),
        (
            {"content_style_ratio": {"low": 0.0, "high": 1.0}, "style": {"candidates": ["relu1_2"]}},
            r"content_style_ratio: empty or invalid range",
        ),
    ],
)
def test_bad_spaces(changes, message):
    with pytest.raises(SpaceError, match=message):
        space("sr_relu", **changes)


def test_sr_networks_searches_six_or_more_networks_at_four_or_five_stage_outputs():
    s = space("sr_networks")
    assert len(s.archs) >= 6
    assert {len(s.content.candidates[a]) for a in s.archs if a != "vgg19"} <= {4, 5}
    # Every literature baseline fits (vgg19 carries conv5_4 as well, for ESRGAN).
    for name in ("johnson_sr", "srgan_vgg54", "esrgan", "pixel"):
        s.params_for(LossConfig.from_mapping(literature_loss(name)))


def test_sr_lite0_takes_its_baselines_and_the_pixel_loss_fits_a_space_of_any_network():
    s = space("sr_lite0")
    assert s.archs == ["efficientnet_lite0"]
    assert s.content.candidates["efficientnet_lite0"] == ["blocks.0", "blocks.2", "blocks.4", "blocks.10", "blocks.15"]
    shallow = s.params_for(LossConfig.from_mapping(literature_loss("lite0_shallow")))
    assert shallow["use_blocks.2"] is True and shallow["pixel_weight"] == 0.0
    assert s.params_for(LossConfig.from_mapping(literature_loss("lite0_deep")))["use_blocks.10"] is True
    # conf/loss/pixel.yaml names vgg16, but a pixel-only loss runs no network: it fits as this space's network.
    pixel = s.params_for(LossConfig.from_mapping(literature_loss("pixel")))
    assert "pixel_weight" not in pixel and not any(v for k, v in pixel.items() if k.startswith("use_"))
    assert s.suggest(optuna.trial.FixedTrial(pixel)).arch == "efficientnet_lite0"
    with pytest.raises(ValueError, match="not in search_space.arch"):  # a loss on VGG's layers still does not
        s.params_for(LossConfig.from_mapping(literature_loss("johnson_sr")))


def test_narrowing_arch_on_the_command_line_keeps_that_networks_candidates():
    cfg = to_container(compose_config(["search_space=sr_networks", "search_space.arch=[resnet18,convnext_tiny]"]))
    s = SearchSpace.from_config(cfg["search_space"], weights="random")
    assert s.archs == ["resnet18", "convnext_tiny"]
    assert s.content.candidates == {"resnet18": ["relu", "layer1", "layer2", "layer3", "layer4"],
                                    "convnext_tiny": ["features.1", "features.3", "features.5", "features.7"]}
    config = s.suggest(optuna.trial.FixedTrial({"arch": "convnext_tiny", "use_features.5": True, "w_features.5": 2.0,
                                                "use_features.7": False, "use_features.1": False,
                                                "use_features.3": False, "pixel_weight": 0.0, "criterion": "l1"}))
    assert config.arch == "convnext_tiny" and config.content_layers == {"features.5": 2.0}
    with pytest.raises(ValueError, match="not in search_space.arch"):
        s.params_for(LossConfig.from_mapping(literature_loss("johnson_sr")))


@pytest.mark.parametrize(("archs", "net", "warned"), [
    (["alexnet", "resnet18"], "alex", "alexnet"), (["vgg16"], "vgg", "vgg16"), (["squeezenet1_1"], "squeeze", "squeezenet1_1"),
    (["vgg16", "vgg19"], "alex", None), (["vgg16_bn"], "vgg", None), (["alexnet"], "squeeze", None),
])
def test_metric_overlap_warning_names_the_shared_network(archs, net, warned):
    from layersearch.search.loop import metric_overlap_warning

    line = metric_overlap_warning(archs, net)
    if warned is None:
        assert line is None
    else:
        assert line.startswith(f"warning: {warned} is both") and f"metrics.lpips.net={net}" in line
        assert "\n" not in line
        assert metric_overlap_warning(archs, net, ["psnr_y"]) is None  # LPIPS does not rank the trials
