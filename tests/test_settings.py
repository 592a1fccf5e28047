"""The typed settings: the composed config parsed once (layersearch/settings.py)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from layersearch.config import compose_config, config_groups, load_settings, to_container
from layersearch.errors import ConfigValueError
from layersearch.settings import (
    ComponentSettings,
    LpipsSettings,
    TrainerSettings,
    parse_settings,
    settings_to_dict,
)

OPTIONS = [(g, o) for g, opts in config_groups().items() for o in opts]


def _overrides(group: str, option: str) -> list[str]:
    overrides = [f"{group}={option}"]
    if group == "search_space" and option == "style_johnson" or group == "model" and option == "style":
        overrides.append("task=style")
    if group == "data" and option == "folder":
        overrides += ["data.train_dir=x", "data.val_dir=y"]
    return overrides


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_parses_and_travels_as_json_unchanged(group, option):
    composed = to_container(compose_config(_overrides(group, option)))
    settings = parse_settings(composed)
    # What a worker receives: JSON of settings_to_dict, parsed back.
    assert parse_settings(json.loads(json.dumps(settings_to_dict(settings)))) == settings
    # Every value of the composed config is in the settings, as composed (none dropped, none defaulted).
    again = settings_to_dict(settings)
    for key, value in composed.items():
        if isinstance(value, dict):
            for inner, v in value.items():
                assert again[key][inner] == v, f"{key}.{inner}"
        else:
            assert again[key] == value, key


def test_groups_are_typed_and_frozen():
    settings = load_settings(["preset=smoke", "trainer.lr=0.5"])
    assert isinstance(settings.trainer, TrainerSettings) and settings.trainer.lr == 0.5
    assert settings.trainer.steps == 4 and isinstance(settings.trainer.steps, int)  # the preset's value
    assert settings.metrics.lpips == LpipsSettings(net="alex", weights="random")
    assert settings.task == ComponentSettings("layersearch.trial.tasks.SuperResolution",
                                              {"scale": 4, "blur_sigma": 0.0, "crop": 32, "val_crop": 64})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.trainer.steps = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.search_space["name"] = "x"  # type: ignore[index]  # read-only mapping
    variant = dataclasses.replace(settings, trainer=dataclasses.replace(settings.trainer, steps=9))
    assert variant.trainer.steps == 9 and settings.trainer.steps == 4


def test_a_lone_name_is_a_one_item_list():
    assert load_settings(["study.objectives=lpips"]).study.objectives == ("lpips",)
    assert load_settings(["study.objectives=[lpips,psnr_y]"]).study.objectives == ("lpips", "psnr_y")


def test_options_without_a_key_leave_it_none_and_folder_data_unset_is_none():
    builtin = load_settings([])
    assert builtin.trial.kind == "builtin" and builtin.trial.cmd is None
    assert builtin.launcher.name == "local" and builtin.launcher.time_min is None
    command = load_settings(["trial=command"])
    assert command.trial.kill_grace_s == 10.0 and command.trial.poll_s == 1.0 and command.trial.shell is False
    folder = load_settings(["data=folder"])  # train_dir: ??? until the user sets it; the data loader says how
    assert folder.data.source == "folder" and folder.data.train_dir is None


@pytest.mark.parametrize("change, message", [
    (lambda d: d["trainer"].pop("lr"), "trainer.lr is missing from the config"),
    (lambda d: d["trainer"].update(steps="many"), "trainer.steps must be a whole number, got 'many'"),
    (lambda d: d["trainer"].update(steps=2.5), "trainer.steps must be a whole number, got 2.5"),
    (lambda d: d["trainer"].update(compile="yes"), "trainer.compile must be true or false, got 'yes'"),
    (lambda d: d["study"].update(objectives={"a": 1}), "study.objectives must be a list"),
    (lambda d: d["task"].pop("_target_"), "task._target_ must name a class"),
    (lambda d: d["study"].update(heartbeat_s="???"), "study.heartbeat_s is not set"),
])
def test_a_bad_value_is_one_line_naming_its_key(change, message):
    data = to_container(compose_config([]))
    change(data)
    with pytest.raises(ConfigValueError, match=message.replace("(", r"\(").replace(".", r"\.")) as caught:
        parse_settings(data)
    assert "\n" not in str(caught.value)

