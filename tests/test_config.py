"""Every option of every config group composes and builds what it names."""

from __future__ import annotations

import pytest
import torch

from layersearch.config import compose_config, config_dir, config_groups, load_settings, to_container
from layersearch.lossnet.declared import declare_from_settings
from layersearch.lossnet.layers import layer_names
from layersearch.lossnet.loss import LossConfig
from layersearch.search.loop import SearchSpace, make_pruner, make_sampler, resolve_objectives
from layersearch.settings import parse_settings
from layersearch.trial.kinds import make_training
from layersearch.trial.tasks import build_task, construct

OPTIONS = [(group, option) for group, options in config_groups().items() for option in options]


def test_every_yaml_starts_with_a_comment():
    for path in config_dir().rglob("*.yaml"):
        first = path.read_text().splitlines()[0]
        assert first.startswith("#"), path


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_builds(group, option):
    overrides = [f"{group}={option}"]
    if group == "data" and option == "folder":
        overrides += ["data.train_dir=x", "data.val_dir=y"]
    if group == "search_space" and option == "style_johnson" or group == "model" and option == "style":
        overrides += ["task=style"]
    cfg = to_container(compose_config(overrides))
    settings = parse_settings(cfg)
    if group == "loss":
        LossConfig.from_mapping({"loss_net": cfg["loss_net"], **cfg["loss"]})
    if group == "loss_net":
        # With the network's own layer: the default loss (johnson_sr, relu2_2) is a VGG loss. loss_net=timm
        # declares timm's model (timm_<name>: apart from the built-in names).
        arch = f"timm_{cfg['loss_net']['timm']}" if option == "timm" else option
        assert cfg["loss_net"]["arch"] == arch
        declare_from_settings(settings)
        LossConfig.from_mapping({"loss_net": cfg["loss_net"], "content_layers": {layer_names(arch)[-1]: 1.0}})
    if group == "search_space":
        space = SearchSpace.from_config(settings.search_space, weights="random")
        objectives = resolve_objectives(settings.study, make_training(settings))
        make_sampler(settings.study.sampler, space, len(objectives), 0, 4)
        make_pruner(settings.study.pruner, len(objectives), 4, 0, settings.trainer.steps, settings.trainer.eval_every)
    if group == "model":
        params = settings.task.params
        extra = {"scale": params["scale"]} if "scale" in params else {}
        generator = construct(settings.model, **extra)
        scale = extra.get("scale", 1)
        out = generator(torch.rand(1, 3, 16, 16))
        assert out.shape == (1, 3, 16 * scale, 16 * scale)
    if group == "task":
        smoke = load_settings([*overrides, "preset=smoke"])
        task = build_task(smoke.task, smoke.data, smoke.model, smoke.metrics, "cpu")
        assert set(task.objectives) <= set(task.evaluate(task.build_generator()))
    if group == "trial":
        assert make_training(settings).kind == option
    assert cfg["seed"] == 0


def test_objectives_can_be_any_metric_the_task_reports():
    settings = load_settings(["study.objectives=[ssim_y,lpips]"])
    assert resolve_objectives(settings.study, make_training(settings)) == [("ssim_y", "maximize"), ("lpips", "minimize")]
    settings = load_settings(["task=style"])
    assert [m for m, _ in resolve_objectives(settings.study, make_training(settings))] == ["content_lpips",
                                                                                           "style_distance"]
