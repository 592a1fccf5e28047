"""The typed settings every command runs on: the composed Hydra config, parsed once into frozen dataclasses.

``conf/`` stays the one source of defaults and of their documentation (the configuration reference is
generated from it): nothing here has a default value of its own. `parse_settings` reads each config group
into its dataclass, with the types the fields declare; a missing key or a value of the wrong type is one
line naming the key. Below the CLI, code takes these objects (or the one group it needs), never the
composed mapping; a variant is made with `dataclasses.replace` (a worker's sampler seed, a confirm run's
steps), and `settings_to_dict` / `parse_settings` carry them to a worker process as JSON.

Why plain dataclasses built from the composed container rather than Hydra structured configs: the YAML files
keep their comments and stay the reference users read (structured configs would move the schema, and
eventually the defaults, into Python), a user's own config groups (``--config-dir``) need no registration,
and the same parse serves the JSON a worker receives. Hydra still composes and checks the overrides.

Two blocks are kept as read-only mappings because their own classes parse them with their own rules and
messages: the ``loss`` block (``lossnet.LossConfig``) and the ``search_space`` (``search.SearchSpace``); and
the keyword arguments of the classes ``task._target_`` and ``model._target_`` name, which belong to those
classes.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigValueError

__all__ = [
    "ComponentSettings", "ConfirmSettings", "DataSettings", "ExportSettings", "InspectSettings", "LauncherSettings",
    "LossNetSettings", "LpipsSettings", "MetricsSettings", "PathsSettings", "ReportSettings", "Settings",
    "StudySettings", "TrackingSettings", "TrainerSettings", "TrialSettings", "parse_settings", "settings_to_dict",
]


def _frozen(value: Any) -> Any:
    """A read-only view of a mapping (lists stay lists, as the classes that parse them expect)."""
    if isinstance(value, Mapping):
        return types.MappingProxyType({str(k): _frozen(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return [_frozen(v) for v in value]
    return value


def _thawed(value: Any) -> Any:
    """Plain dicts and lists again (for JSON, YAML and user attributes)."""
    if isinstance(value, Mapping):
        return {k: _thawed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thawed(v) for v in value]
    return value


def _is_missing(value: Any) -> bool:
    return isinstance(value, str) and value == "???"


def _coerce(value: Any, hint: Any, key: str, low: int | None = None) -> Any:
    """``value`` as the field's type says; one line naming ``key`` when it cannot be.

    ``low``: the least whole number the field takes, named in the message (its range is checked where the
    value is used, with the reason).
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return _coerce(value, option, key, low)
            except ConfigValueError:
                continue
        # null is allowed too, but the message keeps to what the user meant to give (a number, a list...)
        raise ConfigValueError(f"{key} must be {' or '.join(_kind(o, low) for o in options)}, got {value!r}")
    if hint is Any:
        return _frozen(value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigValueError(f"{key} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigValueError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
            raise ConfigValueError(f"{key} must be {_kind(int, low)}, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigValueError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, (Mapping, list, tuple)) or value is None:
            raise ConfigValueError(f"{key} must be a string, got {value!r}")
        return str(value)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [value]  # a lone name, as `study.objectives=lpips` writes it
        if not isinstance(value, (list, tuple)):
            raise ConfigValueError(f"{key} must be a list, got {value!r}")
        return tuple(_coerce(v, args[0], key) for v in value)
    if origin is Mapping or hint is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigValueError(f"{key} must be a mapping, got {value!r}")
        return _frozen(value)
    if dataclasses.is_dataclass(hint):
        parse = getattr(hint, "parse", None)
        return parse(value, key) if parse is not None else _parse(hint, value, key)
    raise TypeError(f"settings field {key}: unsupported type {hint!r}")  # a bug in this module


def _kind(hint: Any, low: int | None = None) -> str:
    if typing.get_origin(hint) in (list, tuple):
        return "a list"
    if hint is int and low is not None:
        return f"a whole number >= {low}"
    return {int: "a whole number", float: "a number", str: "a string", bool: "true or false"}.get(hint, str(hint))


def _parse(cls: type, data: Any, prefix: str) -> Any:
    """An instance of the dataclass ``cls`` from the mapping ``data`` (keys it does not declare are ignored:
    Hydra has already refused unknown keys, and ``+key=...`` additions are the user's own)."""
    if not isinstance(data, Mapping):
        raise ConfigValueError(f"{prefix or 'the config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        key = f"{prefix}.{field.name}" if prefix else field.name
        source = field.metadata.get("key", field.name)
        if source not in data:
            if field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING:
                continue  # a key that only some options of the group have (see the field's comment)
            raise ConfigValueError(f"{key} is missing from the config; set it with {key}=...")
        value = data[source]
        if _is_missing(value):
            if field.default is None:
                value = None  # Hydra's "???": the code that needs it says how to set it (data.train_dir, ...)
            else:
                raise ConfigValueError(f"{key} is not set: pass {key}=...")
        values[field.name] = _coerce(value, hints[field.name], key, field.metadata.get("min"))
    return cls(**values)


# --------------------------------------------------------------------------------------------------------
# The groups, one dataclass each (conf/<group>/*.yaml documents every field)


@dataclass(frozen=True)
class PathsSettings:
    studies_dir: str
    outputs_dir: str


@dataclass(frozen=True)
class ComponentSettings:
    """A class named by ``_target_`` (conf/task/, conf/model/) and the keyword arguments it takes."""

    target: str = dataclasses.field(metadata={"key": "_target_"})
    params: Mapping[str, Any] = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))

    @classmethod
    def parse(cls, data: Any, key: str) -> ComponentSettings:
        if not isinstance(data, Mapping):
            raise ConfigValueError(f"{key} must be a mapping with _target_, got {data!r}")
        target = data.get("_target_")
        if not isinstance(target, str) or not target:
            raise ConfigValueError(f"{key}._target_ must name a class (module.Class), got {target!r}")
        return cls(target, _frozen({k: v for k, v in data.items() if k != "_target_"}))


@dataclass(frozen=True)
class DataSettings:
    """Where the images come from (conf/data/): ``samples`` (scikit-image's photos) or a ``folder``."""

    source: str
    on_device: bool | str
    # source: samples (null = the built-in lists)
    train: list[str] | None = None
    val: list[str] | None = None
    # source: folder
    train_dir: str | None = None
    val_dir: str | None = None


@dataclass(frozen=True)
class TrainerSettings:
    steps: int
    batch_size: int
    lr: float
    eval_every: int | None
    device: str
    precision: str
    seed: int
    preview_images: int
    check_every: int | str
    channels_last: bool | str
    compile: bool
    progress: bool


@dataclass(frozen=True)
class TrialSettings:
    """Which training each trial runs (conf/trial/): ``builtin``, ``python`` (fn) or ``command`` (cmd ...)."""

    kind: str
    # kind: python: ``module:function`` or ``path/to/file.py:function``
    fn: str | None = None
    # kind: command
    cmd: str | None = None
    shell: bool | None = None
    echo: bool | None = None
    timeout_s: float | None = None
    kill_grace_s: float | None = None
    poll_s: float | None = None
    score_dir: str | None = None


@dataclass(frozen=True)
class LossNetSettings:
    """The loss network (conf/loss_net/): a built-in by name, or one declared by ``module:`` or ``timm:``
    (lossnet/declared.py, docs/own-loss-network.md)."""

    arch: str
    # every shipped file sets it; a declared network without it takes its own default (builder, imagenet)
    weights: str | None = None
    # declared networks only
    module: str | None = None
    timm: str | None = None
    kwargs: Mapping[str, Any] | None = None
    normalize: str | None = None
    prefix_tokens: int | str | None = None


@dataclass(frozen=True)
class LpipsSettings:
    net: str
    weights: str


@dataclass(frozen=True)
class MetricsSettings:
    lpips: LpipsSettings
    names: list[str] | None = None  # null = the objectives and psnr_y, ssim_y (trial.metric_registry.metric_set)


@dataclass(frozen=True)
class StudySettings:
    name: str
    n_trials: int
    timeout: float | None
    sampler: str
    pruner: str
    n_startup_trials: int
    n_warmup_steps: int | None
    warmup_fraction: float
    baseline_seeds: int
    objectives: list[str] | None
    directions: list[str] | None
    storage: str | None
    seed: int
    workers: int
    trials_per_device: int
    heartbeat_s: float
    grace_s: float
    db_retry_s: float


@dataclass(frozen=True)
class TrackingSettings:
    uri: str
    artifacts: str | None


@dataclass(frozen=True)
class ExportSettings:
    out: str | None
    metric: str | None
    pareto: bool
    format: str
    source: str


def _at_least(low: int) -> Any:
    return dataclasses.field(metadata={"min": low})


@dataclass(frozen=True)
class ConfirmSettings:
    top_k: int = _at_least(1)
    seeds: int = _at_least(2)
    first_seed: int = _at_least(0)
    steps: int | None = _at_least(1)
    eval_every: int | None = _at_least(1)
    alpha: float
    first_test: int = _at_least(2)


@dataclass(frozen=True)
class ReportSettings:
    top: int
    port: int | None
    step_share: float
    seed: int
    log_mlflow: bool


@dataclass(frozen=True)
class InspectSettings:
    image: str
    layers: list[str] | None
    size: int
    steps: int
    tv_weight: float
    seed: int


@dataclass(frozen=True)
class LauncherSettings:
    """Where a sweep's workers run (conf/launcher/): ``local`` processes or a ``slurm`` job array."""

    name: str
    # name: slurm
    partition: str | None = None
    gpus_per_job: int | None = None
    time_min: int | None = None
    array_size: int | None = None
    cluster: str | None = None
    folder: str | None = None
    wait: bool | None = None


@dataclass(frozen=True)
class Settings:
    """Everything a command runs on (conf/config.yaml and its groups), parsed and read-only."""

    # conf/config.yaml's own keys first: a group that interpolates one (report.port: ${port}) is then never the
    # key a bad value is reported under
    seed: int
    loss_file: str | None
    out_dir: str | None
    pred_dir: str | None
    target_dir: str | None
    scale: int
    port: int | None
    paths: PathsSettings
    task: ComponentSettings
    data: DataSettings
    model: ComponentSettings
    trainer: TrainerSettings
    trial: TrialSettings
    loss_net: LossNetSettings
    networks: Mapping[str, Any]  # declared networks besides loss_net: {name: {module|timm, ...}}
    loss: Mapping[str, Any]  # the layer config block, parsed by lossnet.LossConfig
    metrics: MetricsSettings
    search_space: Mapping[str, Any]  # parsed by search.SearchSpace
    study: StudySettings
    tracking: TrackingSettings
    export: ExportSettings
    confirm: ConfirmSettings
    report: ReportSettings
    inspect: InspectSettings
    launcher: LauncherSettings


def parse_settings(data: Mapping[str, Any]) -> Settings:
    """The composed config (a resolved plain container, or what `settings_to_dict` wrote) as `Settings`.

    Raises:
        ConfigValueError: a missing key or a value of the wrong type, in one line naming the key.
    """
    if not isinstance(data, Mapping):
        raise ConfigValueError(f"the config must be a mapping, got {type(data).__name__}")
    return _parse(Settings, copy.deepcopy(dict(data)), "")


def settings_to_dict(settings: Any) -> dict[str, Any]:
    """Plain data (dicts, lists) that `parse_settings` reads back to equal settings: for JSON and records."""
    if isinstance(settings, ComponentSettings):
        return {"_target_": settings.target, **_thawed(settings.params)}
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        out = {}
        for field in dataclasses.fields(settings):
            value = getattr(settings, field.name)
            out[field.metadata.get("key", field.name)] = settings_to_dict(value)
        return out
    return _thawed(settings)
