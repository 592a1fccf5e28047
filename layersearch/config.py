"""Composing the Hydra config tree that ships in `conf/` (installed as the package `layersearch.conf`)."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from .errors import ConfigValueError, LayersearchError
from .settings import Settings, parse_settings

if TYPE_CHECKING:
    from omegaconf import DictConfig


PRIMARY = "config"


class ConfigCompositionError(LayersearchError, ValueError):
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


#: Keys whose value is taken as written: a shell command has spaces, braces (our placeholders), quotes and
#: ``$`` that Hydra's override grammar would otherwise parse as lists, dicts or interpolations.
VERBATIM_KEYS = ("trial.cmd",)


def verbatim(override: str) -> str:
    """``trial.cmd=python train.py {steps}`` -> the same value as one Hydra quoted string.

    A value the user already quoted for Hydra (``trial.cmd='...'``, quotes kept by the shell) is left alone.
    """
    key, sep, value = override.partition("=")
    if not sep or key.lstrip("+") not in VERBATIM_KEYS or value[:1] in ("'", '"') or value == "null":
        return override
    # Hydra's quoted strings: backslashes are escaped only before a quote or the end; ${ would interpolate.
    value = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value)
    value = value.replace("'", "\\'").replace("${", "\\${")
    return f"{key}='{value}'"


def compose_config(overrides: list[str] | tuple[str, ...] = (), extra_dirs: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose ``conf/config.yaml`` with Hydra overrides (``key=value``, ``group=option``).

    Args:
        overrides: Hydra override strings, as on the command line.
        extra_dirs: directories of the user's own config groups, searched before the shipped tree
            (the CLI's ``--config-dir``).

    Raises:
        ConfigCompositionError: an unknown group option, key or malformed override, in one line.
    """
    # Hydra and OmegaConf load here, not at import, so `layersearch --help` stays fast.
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    overrides = [verbatim(o) for o in overrides]
    if extra_dirs:
        paths = ",".join(f"file://{Path(d).resolve()}" for d in extra_dirs)
        overrides.append(f"hydra.searchpath=[{paths}]")
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name=PRIMARY, overrides=overrides, return_hydra_config=True)
        choices = dict(cfg.hydra.runtime.choices)
        OmegaConf.set_readonly(cfg, False)
        OmegaConf.set_struct(cfg, False)
        del cfg["hydra"]
        _add_space_networks(cfg, extra_dirs)
        check_numbers(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False), choices, extra_dirs)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigCompositionError(_one_line(err)) from None
    OmegaConf.set_struct(cfg, True)
    return cfg


def option_file(group: str, option: str, extra_dirs=()) -> Path | None:
    """The YAML file of a group option as Hydra finds it: the user's config dirs first, then the shipped tree."""
    roots = [Path(d) for d in extra_dirs] + [config_dir()]
    return next((r / group / f"{option}.yaml" for r in roots if (r / group / f"{option}.yaml").is_file()), None)


def _add_space_networks(cfg, extra_dirs) -> None:
    """Put into ``networks`` the declared loss networks the search space names besides ``loss_net``.

    ``search_space.arch=[vgg16, mynet]`` with ``loss_net/mynet.yaml`` in a ``--config-dir``: the file is read
    as the declaration of ``mynet`` (when it has ``module:`` or ``timm:``; a built-in's file declares nothing),
    so that the sweep and its workers know how to build it.
    """
    from omegaconf import OmegaConf

    def plain(key: str) -> dict:
        value = cfg.get(key)
        return OmegaConf.to_container(value, resolve=True) if value is not None else {}

    space = plain("search_space")
    arch = space.get("arch") or []
    names = [arch] if isinstance(arch, str) else list(arch)
    for group in ("content", "style"):
        candidates = (space.get(group) or {}).get("candidates") if isinstance(space.get(group), dict) else None
        if isinstance(candidates, dict):
            names += list(candidates)
    networks = plain("networks")
    for name in dict.fromkeys(map(str, names)):
        if name == cfg.loss_net.get("arch") or name in networks:
            continue
        path = option_file("loss_net", name, extra_dirs)
        data = yaml.safe_load(path.read_text()) if path is not None else None
        if isinstance(data, dict) and (data.get("module") or data.get("timm")):
            networks[name] = {k: v for k, v in data.items() if k != "arch"}
    cfg.networks = networks


#: Allowed ranges (inclusive) of numeric keys whose type alone does not say enough.
RANGES = {"port": (1, 65535), "study.workers": (1, 4096), "study.trials_per_device": (1, 64),
          "study.heartbeat_s": (0.01, 86400), "study.grace_s": (0.1, 864000),
          "launcher.array_size": (1, 100000), "launcher.gpus_per_job": (0, 64), "launcher.time_min": (1, 10**6)}
#: Numeric keys that may also be null (each documented in its YAML file).
NULLABLE = frozenset({"task.val_crop", "task.style_size", "trainer.eval_every"})
_ABSENT = object()


def _numbers(data, prefix: str):
    """(dotted key, value) for every int or float leaf of a YAML mapping, lists and ``defaults`` skipped."""
    for key, value in (data or {}).items():
        if key == "defaults" and not prefix:
            continue
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _numbers(value, f"{dotted}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield dotted, value


def _lookup(data, dotted: str):
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return _ABSENT
        data = data[part]
    return data


def check_numbers(cfg: dict, choices: dict, extra_dirs=()) -> None:
    """Every value that a chosen YAML file sets to a number must still be one after the overrides.

    Hydra keeps ``trainer.lr=abc`` as the string 'abc'; without this check it would surface later as
    "could not convert string to float", naming no key. Types come from the files themselves (the
    primary config and each chosen group option), so a new numeric key needs no entry anywhere.

    Raises:
        ConfigValueError: naming the key, what it should be and what it got.
    """
    files = [("", PRIMARY)] + [(g, o) for g, o in choices.items() if o and not g.startswith("hydra")]
    for group, option in files:
        path = option_file(group, option, extra_dirs)
        if path is None:
            continue
        text = path.read_text()
        is_global = not group or "# @package _global_" in text.split("\n", 3)[0]
        prefix = "" if is_global else group.replace("/", ".") + "."
        for key, default in _numbers(yaml.safe_load(text), prefix):
            value = _lookup(cfg, key)
            if value is _ABSENT or isinstance(value, (dict, list)):
                continue  # replaced by a structure (a search-space range, a layer dict): validated elsewhere
            if value is None and key in NULLABLE:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                kind = "a whole number" if isinstance(default, int) else "a number"
                raise ConfigValueError(f"{key} must be {kind}, got {value!r}")
            if isinstance(default, int) and isinstance(value, float) and not value.is_integer():
                raise ConfigValueError(f"{key} must be a whole number, got {value!r}")
            low, high = RANGES.get(key, (value, value))
            if not low <= value <= high:
                raise ConfigValueError(f"{key} must be between {low} and {high}, got {value!r}")


def to_container(cfg: DictConfig) -> dict:
    """Resolved plain-dict copy of a config (for files, MLflow and instantiation)."""
    from omegaconf import OmegaConf

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


def load_settings(overrides: list[str] | tuple[str, ...] = (), extra_dirs: list[str] | tuple[str, ...] = ()) -> Settings:
    """`compose_config`, resolved and parsed into the typed `Settings` every command runs on."""
    return parse_settings(to_container(compose_config(overrides, extra_dirs)))
