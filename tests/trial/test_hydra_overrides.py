"""``{overrides:KEY}``: the sampled loss handed to a Hydra app, checked with Hydra's own compose."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from layersearch.settings import LpipsSettings, TrialSettings
from layersearch.trial.command import CommandError, CommandTraining
from layersearch.trial.handle import TrialFailed
from layersearch.trial.hydra_overrides import hydra_overrides

SAMPLED = {"loss_net": {"arch": "efficientnet_lite0", "weights": "imagenet"},
           "content_layers": {"blocks.0": 0.3, "blocks.10": 3.0}, "style_layers": {}, "content_weight": 1.0,
           "pixel_weight": 1e-05, "criterion": "mse", "provenance": {"study": "my study", "on": "2026-12-07",
                                                                        "flag": "true", "path": "a/b.py:build"}}


def composed(tmp_path, app_config: str, overrides: list[str]) -> dict:
    (tmp_path / "app.yaml").write_text(app_config)
    with initialize_config_dir(version_base="1.3", config_dir=str(tmp_path)):
        return OmegaConf.to_container(compose("app", overrides=overrides), resolve=True)


def test_the_app_receives_exactly_the_sampled_config_not_a_merge_with_its_default(tmp_path):
    app = "model:\n  lr: 0.1\n  perceptual:\n    content_layers: {relu2_2: 1.0, blocks.4: 2.0}\n    tv_weight: 0.5\n"
    cfg = composed(tmp_path, app, hydra_overrides("model.perceptual", SAMPLED))
    assert cfg["model"]["perceptual"] == SAMPLED  # relu2_2 and tv_weight of the default are gone
    assert cfg["model"]["lr"] == 0.1


def test_a_key_the_app_lacks_is_added(tmp_path):
    cfg = composed(tmp_path, "model:\n  lr: 0.1\n", hydra_overrides("model.perceptual", SAMPLED))
    assert cfg["model"]["perceptual"] == SAMPLED


@pytest.mark.parametrize(("name", "error"), [("x,y", "cannot parse"), ("a:b", "reads the sampled config back differently")])
def test_a_layer_name_hydra_cannot_spell_fails_the_trial_in_one_line(name, error):
    with pytest.raises(TrialFailed, match=rf"\{{overrides:loss\}}: Hydra {error}"):
        hydra_overrides("loss", {"content_layers": {name: 1.0}})


def command(cmd: str, shell: bool = False) -> CommandTraining:
    settings = TrialSettings(kind="command", fn=None, cmd=cmd, shell=shell, echo=False, timeout_s=None,
                             kill_grace_s=10.0, poll_s=1.0, score_dir=None)
    return CommandTraining(settings, LpipsSettings(net="alex", weights="random"))


def test_the_placeholder_becomes_two_arguments_or_quoted_words_in_a_shell():
    values = {"steps": "30"}
    plain = command("python app.py {overrides:model.perceptual} trainer.max_steps={steps}")
    plain.check()
    assert plain.argv(values, SAMPLED) == ["python", "app.py", *hydra_overrides("model.perceptual", SAMPLED),
                                           "trainer.max_steps=30"]
    import shlex

    shell = command("python app.py {overrides:model.perceptual} trainer.max_steps={steps}", shell=True)
    shell.check()
    assert shlex.split(shell.argv(values, SAMPLED)[2]) == plain.argv(values, SAMPLED)


@pytest.mark.parametrize(("cmd", "error"), [
    ("python app.py x={overrides:model.p}", r"must stand alone, not inside 'x=\{overrides:model.p\}'"),
    ("python app.py {overrides:}", r"names the config key of a Hydra app"),
    ("python app.py {overrides:1model}", r"names the config key of a Hydra app"),
    ("python app.py {override:model}", r"unknown placeholder \{override\}; valid: .*\{overrides:KEY\}"),
])
def test_a_malformed_placeholder_is_one_line_before_any_trial(cmd, error):
    with pytest.raises(CommandError, match=error):
        command(cmd).check()
