"""Composing the Hydra config tree that ships in `conf/` (installed as the package `layersearch.conf`)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

PRIMARY = "config"


class ConfigCompositionError(ValueError):
    """An override or config group option Hydra cannot compose; the message is one line."""


def config_dir() -> Path:
    """The directory of the shipped config tree (top-level conf/ in a checkout, inside the wheel otherwise)."""
    return Path(str(resources.files("layersearch.conf")))


def config_groups(directory: Path | None = None) -> dict[str, list[str]]:
    """Each config group with its options, for `--help`."""
    root = directory or config_dir()
    return {
        group.name: sorted(p.stem for p in group.glob("*.yaml"))
        for group in sorted(root.iterdir())
        if group.is_dir() and any(group.glob("*.yaml"))
    }


def _one_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip() and not line.startswith("full_key")]
    text = " ".join(lines).replace("\t", " ")
    return text.split(" Config search path:")[0]


def compose_config(overrides: list[str] | tuple[str, ...] = (), extra_dirs: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose ``conf/config.yaml`` with Hydra overrides (``key=value``, ``group=option``).

    Args:
        overrides: Hydra override strings, as on the command line.
        extra_dirs: directories of the user's own config groups, searched before the shipped tree
            (the CLI's ``--config-dir``).

    Raises:
        ConfigCompositionError: an unknown group option, key or malformed override, in one line.
    """
    overrides = list(overrides)
    if extra_dirs:
        paths = ",".join(f"file://{Path(d).resolve()}" for d in extra_dirs)
        overrides.append(f"hydra.searchpath=[{paths}]")
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name=PRIMARY, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigCompositionError(_one_line(err)) from None
    OmegaConf.set_readonly(cfg, False)
    return cfg


def to_container(cfg: DictConfig) -> dict:
    """Resolved plain-dict copy of a config (for files, MLflow and instantiation)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def literature_loss(name: str) -> dict:
    """The layer config of ``conf/loss/<name>.yaml`` with its loss network, without a Hydra compose.

    Composing the whole tree costs about a second per call; the sweep reads several baselines at start-up.
    A loss file is a ``loss:`` block plus an optional ``override /loss_net: <arch>`` default (see
    conf/loss/); tests check that this reading equals the composed one for every shipped file.
    """
    root = config_dir()
    path = root / "loss" / f"{name}.yaml"
    if not path.is_file():
        options = ", ".join(sorted(p.stem for p in (root / "loss").glob("*.yaml")))
        raise ConfigCompositionError(f"unknown literature loss {name!r}; choose from {options}")
    data = yaml.safe_load(path.read_text()) or {}
    arch = "vgg16"
    for entry in data.get("defaults") or []:
        if isinstance(entry, dict) and "override /loss_net" in entry:
            arch = entry["override /loss_net"]
    loss_net = yaml.safe_load((root / "loss_net" / f"{arch}.yaml").read_text())
    return {"loss_net": loss_net, **data["loss"]}
