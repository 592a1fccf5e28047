"""Loss networks declared in config: the user's own module (``module: nets.py:build``) or a timm model.

    # loss_net/mynet.yaml in the user's --config-dir (or the same keys in a layer config's loss_net block)
    arch: mynet                      # the name used everywhere a network is named
    module: path/to/nets.py:build    # or my_pkg.nets:build; returns an nn.Module with its weights loaded
    kwargs: {}                       # passed to the builder
    normalize: imagenet              # imagenet | clip | minus_one_one | none (timm: auto, the model's own)
    prefix_tokens: auto              # leading tokens (class, registers) dropped from token outputs

A declared network's layers are its module paths (``named_modules()``), tapped on the module's output with
forward hooks (``taps.HookTaps``); which paths can be layers, and their shapes, come from running the network
once (``probe.py``). ``declare`` registers it in the one registry, so its name works wherever a built-in
name does. The builder is imported and called on first use of the table or the weights, not at declaration.

Weights (``loss_net.weights``): ``builder`` (a ``module:`` network's default: what the builder loaded),
``imagenet`` (a timm network's default: timm's pretrained weights, from its cache or the Hub), a path to a
state dict of the whole module (``.pth``/``.pt``/``.bin`` or ``.safetensors``), or ``random`` (labelled).
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import LayersearchError
from ..importing import load_attr
from .base import BUILDER, IMAGENET_MEAN, IMAGENET_STD, LayerError, LayerInfo, LossNetwork
from .registry import builtin_names, find_network, register

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..settings import Settings
    from .probe import ModuleOutput

#: How images in [0, 1] are fed to a declared network: ``(x - mean) / std``.
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "minus_one_one": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
#: The keys of a declaration (a ``loss_net`` config, a layer config's ``loss_net`` block).
SPEC_KEYS = ("arch", "weights", "module", "timm", "kwargs", "normalize", "prefix_tokens")


class NetworkError(LayersearchError, ValueError):
    """A declared loss network that cannot be used: its builder, a key, a name; one line."""


@dataclass(frozen=True)
class NetworkSpec:
    """What builds a declared network (everything but its weights, which each config chooses)."""

    arch: str
    module: str | None = None
    timm: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    normalize: str = "imagenet"
    prefix_tokens: int | str = "auto"

    @property
    def source(self) -> str:
        """``module path/to/nets.py:build`` or ``timm convnext_tiny``, with kwargs when there are any."""
        what = f"module {self.module}" if self.module else f"timm {self.timm}"
        return what + (f" {self.kwargs}" if self.kwargs else "")

    def to_dict(self) -> dict[str, Any]:
        """The declaration's keys, plain types (a layer config's ``loss_net`` block adds ``weights``)."""
        out: dict[str, Any] = {"arch": self.arch}
        out.update({"module": self.module} if self.module else {"timm": self.timm})
        out.update(kwargs=dict(self.kwargs), normalize=self.normalize, prefix_tokens=self.prefix_tokens)
        return out


def is_declaration(data: Mapping[str, Any] | None) -> bool:
    """True for a ``loss_net`` mapping that declares a network (has ``module`` or ``timm``)."""
    return isinstance(data, Mapping) and bool(data.get("module") or data.get("timm"))


def parse_spec(data: Mapping[str, Any], where: str = "loss_net") -> NetworkSpec:
    """A declaration's keys, checked; a relative file path in ``module`` is made absolute (from the cwd)."""
    unknown = sorted(set(map(str, data)) - set(SPEC_KEYS))
    if unknown:
        raise NetworkError(f"unknown key(s) {', '.join(unknown)} in {where}; valid keys: {', '.join(SPEC_KEYS)}")
    module, timm_name = data.get("module"), data.get("timm")
    if module and timm_name:
        raise NetworkError(f"{where} has both module and timm; a network is built by one of them")
    arch = str(data.get("arch") or timm_name or "")
    if not arch:
        raise NetworkError(f"{where}.arch is missing: the name the network is known by (loss_net.arch)")
    if arch in builtin_names():
        raise NetworkError(f"{where}.arch={arch} is a built-in loss network; give your network another name")
    kwargs = data.get("kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise NetworkError(f"{where}.kwargs must be a mapping of keyword arguments, got {kwargs!r}")
    normalize = str(data.get("normalize") or ("auto" if timm_name else "imagenet"))
    allowed = [*NORMALIZATIONS, *(["auto"] if timm_name else [])]
    if normalize not in allowed:
        raise NetworkError(f"{where}.normalize={normalize!r} is unknown; choose one of: {', '.join(allowed)}")
    prefix = data.get("prefix_tokens", "auto")
    prefix = "auto" if prefix is None else prefix
    if prefix != "auto" and (isinstance(prefix, bool) or not isinstance(prefix, int) or prefix < 0):
        raise NetworkError(f"{where}.prefix_tokens must be 'auto' or a whole number >= 0, got {prefix!r}")
    if module:
        module = str(module)
        file_part, sep, attr = module.rpartition(":")
        if sep and file_part.endswith(".py"):
            module = f"{Path(file_part).expanduser().resolve()}:{attr}"
    return NetworkSpec(arch=arch, module=module or None, timm=str(timm_name) if timm_name else None,
                       kwargs=dict(kwargs), normalize=normalize, prefix_tokens=prefix)


def declare(data: Mapping[str, Any] | NetworkSpec, where: str = "loss_net") -> DeclaredNetwork:
    """Register a declared network (or return the same one, declared before); its weights spec, if given,
    becomes its default.

    Raises:
        NetworkError: bad keys, a built-in name, or the name declared before with another builder.
    """
    spec = data if isinstance(data, NetworkSpec) else parse_spec(data, where)
    existing = find_network(spec.arch)
    if existing is None:
        net = DeclaredNetwork(spec)
        register(net)
    elif isinstance(existing, DeclaredNetwork) and existing.spec == spec:
        net = existing
    else:
        before = existing.spec.source if isinstance(existing, DeclaredNetwork) else "a network registered in code"
        raise NetworkError(f"loss network {spec.arch} is declared twice with different builders: {before}, "
                           f"then {spec.source}; give each its own name")
    weights = None if isinstance(data, NetworkSpec) else data.get("weights")
    if weights:
        net.default_weights = net.check_weights(str(weights))
    return net


def declare_networks(loss_net: Mapping[str, Any], networks: Mapping[str, Mapping[str, Any]]) -> None:
    """Register what a config declares: ``loss_net`` when it has ``module``/``timm``, and each entry of
    ``networks`` (declarations the search space names besides ``loss_net``)."""
    if is_declaration(loss_net):
        declare(loss_net, "loss_net")
    for name, entry in (networks or {}).items():
        if not isinstance(entry, Mapping) or not is_declaration(entry):
            raise NetworkError(f"networks.{name} must declare a network (module: or timm:), got {entry!r}")
        declare({"arch": name, **entry}, f"networks.{name}")


def declare_from_settings(settings: Settings) -> None:
    """``declare_networks`` for a command's settings: every entry point calls it once (the CLI, a worker)."""
    from ..settings import settings_to_dict

    declare_networks(settings_to_dict(settings.loss_net), settings_to_dict(settings.networks))


# (arch, weights, seed or file identity) -> the frozen module, made once per process.
_MODELS: dict[tuple, nn.Module] = {}


class DeclaredNetwork(LossNetwork):
    """A network built by the user's builder or by timm; layers are module paths, tapped with hooks."""

    family = "module_path"
    taps_by_hooks = True
    #: False for a built-in network that uses this seam (efficientnet_lite0): its layer configs name it alone.
    declared_by_user = True

    def __init__(self, spec: NetworkSpec):
        super().__init__(spec.arch)
        self.spec = spec
        self.default_weights = BUILDER if spec.module else "imagenet"

    def __repr__(self) -> str:
        return f"DeclaredNetwork({self.name!r}, {self.spec.source})"

    # ---- building -------------------------------------------------------------------------------------

    def _build(self, pretrained: bool = False) -> nn.Module:
        """The module as the declaration builds it (for timm: ``pretrained`` or not); checked, in eval mode."""
        from torch import nn

        if self.spec.module:
            builder = load_attr(self.spec.module, f"loss_net.module of {self.name}", NetworkError, "builder")
            if not callable(builder):
                raise NetworkError(f"loss_net.module={self.spec.module} is not callable")
            try:
                model = builder(**self.spec.kwargs)
            except LayersearchError:
                raise
            except Exception as err:  # the user's builder failed: one line, naming it
                raise NetworkError(f"the builder {self.spec.module} of {self.name} raised "
                                   f"{type(err).__name__}: {err}") from None
        else:
            model = _timm_model(self.spec.timm, self.spec.kwargs, pretrained, self.name)
        if not isinstance(model, nn.Module):
            raise NetworkError(f"the builder of {self.name} ({self.spec.source}) returned a "
                               f"{type(model).__name__}, not a torch nn.Module")
        return model.eval()

    @cached_property
    def structure(self) -> nn.Module:
        """The module the table is read from: the builder's (with its weights) or timm's without weights."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return _frozen(self._build(pretrained=False))

    def check_weights(self, weights: str) -> str:
        """``weights`` if this kind of network takes it; NetworkError saying what it takes otherwise."""
        from .weights import IMAGENET, RANDOM

        own = BUILDER if self.spec.module else IMAGENET
        other = IMAGENET if self.spec.module else BUILDER
        if weights == other:
            raise NetworkError(f"{self.name} ({self.spec.source}) takes weights {own}, {RANDOM} or a file, "
                               f"not {other}")
        return weights

    def model(self, weights: str, seed: int = 0) -> nn.Module:
        """The frozen module for a weights spec, made once per process and shared by every loss using it."""
        import torch

        from .weights import IMAGENET, is_random, read_weights_file, warn_random

        weights = self.check_weights(str(weights))
        if is_random(weights):
            warn_random(self.name)
            key: tuple = (self.name, weights, int(seed))
        elif weights in (BUILDER, IMAGENET):
            key = (self.name, weights)
        else:
            state = read_weights_file(weights)
            key = (self.name, weights, id(state))
        if key in _MODELS:
            return _MODELS[key]
        if weights == BUILDER:
            model = self.structure
        elif weights == IMAGENET:
            model = _frozen(self._build(pretrained=True))
        elif is_random(weights):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = self._build(pretrained=False) if self.spec.timm else _reinitialised(self.structure)
            model = _frozen(model)
        else:
            model = copy.deepcopy(self.structure)
            _load_strict(model, state, self.name, weights)
            model = _frozen(model)
        _MODELS[key] = model
        return model

    # ---- normalisation --------------------------------------------------------------------------------

    @cached_property
    def _mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if self.spec.normalize == "auto":
            cfg = getattr(self.structure, "pretrained_cfg", None) or {}
            return tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
        return NORMALIZATIONS[self.spec.normalize]

    @property
    def mean(self) -> tuple[float, ...]:  # type: ignore[override]
        return self._mean_std[0]

    @property
    def std(self) -> tuple[float, ...]:  # type: ignore[override]
        return self._mean_std[1]

    # ---- the layer table ------------------------------------------------------------------------------

    @cached_property
    def outputs(self) -> list[ModuleOutput]:
        from .probe import probe

        try:
            return probe(self.structure)
        except LayersearchError:
            raise
        except Exception as err:
            raise NetworkError(f"{self.name} ({self.spec.source}) failed on a 2 x 3 x 224 x 224 probe batch: "
                               f"{type(err).__name__}: {err}") from None

    @cached_property
    def prefix_count(self) -> int:
        """Leading tokens of the token outputs that are not patches: ``prefix_tokens``, or the module's own."""
        if self.spec.prefix_tokens != "auto":
            return int(self.spec.prefix_tokens)
        return int(getattr(self.structure, "num_prefix_tokens", 0) or 0)

    def layer_data(self) -> tuple[list[str], list[LayerInfo]]:
        from .probe import PROBE_SIZE, grid_tokens

        rows = []
        for out in sorted((o for o in self.outputs if o.problem is None), key=lambda o: o.order):
            if out.is_feature_map:
                rows.append(LayerInfo(out.path, out.order, out.kind, out.shape[1], max(1, PROBE_SIZE // out.shape[2]),
                                      0, out.path, params=out.params))
            else:
                drop = grid_tokens(out.shape[1], self.prefix_count)
                rows.append(LayerInfo(out.path, out.order, out.kind, out.shape[2], 0, 0, out.path,
                                      tokens=out.shape[1] - drop, prefix=drop, params=out.params))
        if not rows:
            raise NetworkError(f"{self.name} has no module whose output is a feature map or tokens")
        return [], rows

    @property
    def units(self) -> list[str]:
        return []

    @property
    def copied(self) -> set[str]:
        """Layers whose output a later in-place operation overwrites (their taps copy it)."""
        return {o.path for o in self.outputs if o.overwritten}

    def validate_layers(self, names, elsewhere=None) -> list[str]:
        valid = self.layer_names()
        names = list(names)
        problems = {o.path: o.problem for o in self.outputs}
        for name in names:
            if name in valid:
                continue
            if problems.get(name):
                raise LayerError(f"layer {name} of {self.name}: module {name} {problems[name]}")
            near = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
            hint = f"; nearest: {', '.join(near)}" if near else ""
            raise LayerError(f"unknown layer {name!r} for {self.name} (its layers are module paths){hint}; "
                             f"`layersearch layers {self.name}` (with your --config-dir) lists all {len(valid)}")
        return names

    @cached_property
    def _receptive_fields(self) -> dict[str, int | None]:
        from .probe import receptive_fields

        return receptive_fields(self.structure, [i.name for i in self.table if not i.tokens])

    def receptive_field(self, name: str) -> int | None:
        """Measured from the input gradient on a 128 px probe (`probe.receptive_fields`): None when it is
        larger than 128 px or the layer holds tokens."""
        self.layer(name)
        return self._receptive_fields.get(name)

    def format_layer_table(self) -> str:
        table = self.table
        fields = self._receptive_fields
        width = max(12, *(len(i.name) for i in table))
        kind_width = max(5, *(len(i.kind) for i in table))
        rows = [f"{'module path':<{width}} {'class':<{kind_width}} {'channels':>8} {'stride / tokens':>17} "
                f"{'receptive field':>15} {'params':>11}"]
        for info in table:
            where = (f"{info.tokens} tokens" + (f" (+{info.prefix} dropped)" if info.prefix else "")
                     if info.tokens else f"/{info.stride}")
            rf = fields.get(info.name)
            rf_text = "global" if info.tokens else (f"{rf}x{rf}" if rf else ">128")
            rows.append(f"{info.name:<{width}} {info.kind:<{kind_width}} {info.channels:>8} {where:>17} "
                        f"{rf_text:>15} {info.params:>11,}")
        return "\n".join(rows)

    # ---- provenance -----------------------------------------------------------------------------------

    def provenance(self, weights: str) -> dict[str, str]:
        """Where this network and its weights came from: the builder (or timm model), and the weights file's
        name and sha256 when one was read (the weights spec, or ``weights_file`` set by the builder)."""
        out = {"source": self.spec.source, "weights": self.weights_label(weights)}
        file = None
        if str(weights) not in (BUILDER, "imagenet", "random"):
            file = Path(str(weights)).expanduser()
        elif str(weights) == BUILDER and getattr(self.structure, "weights_file", None):
            file = Path(str(self.structure.weights_file)).expanduser()
        if file is not None and file.is_file():
            out["weights_file"] = file.name
            out["weights_sha256"] = getattr(self.structure, "weights_sha256", None) or _sha256(file)
        return out


def _frozen(model: nn.Module) -> nn.Module:
    import torch

    model.eval().requires_grad_(False)
    # channels_last: the layout the built-in networks run in too (features.FeatureExtractor)
    return model.to(memory_format=torch.channels_last)


def _reinitialised(model: nn.Module) -> nn.Module:
    """A copy with every submodule that has ``reset_parameters`` (torch's own layers) initialised afresh."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return model


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], arch: str, weights: str) -> None:
    from .weights import WeightsError, weights_label

    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or extra or wrong:
        problem = (f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(extra[:3])}"
                   if extra else f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, the module "
                   f"{tuple(expected[wrong[0]].shape)}")
        raise WeightsError(f"weights {weights_label(weights)} do not fit {arch}: {problem}")
    model.load_state_dict(state, strict=True)


def _timm_model(name: str, kwargs: Mapping[str, Any], pretrained: bool, arch: str) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise NetworkError(f"loss network {arch} is a timm model, and timm is not installed: "
                           "pip install 'layersearch[timm]'") from None
    from .weights import WeightsError

    if not timm.is_model(name):
        near = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise NetworkError(f"timm has no model {name!r}" + (f"; nearest: {', '.join(near)}" if near else ""))
    kwargs = dict(kwargs)
    try:
        try:
            # ViTs: any training-patch size works (positional embeddings interpolated); CNNs take no such argument.
            return timm.create_model(name, pretrained=pretrained, **{"dynamic_img_size": True, **kwargs})
        except TypeError as err:
            if "dynamic_img_size" not in str(err):
                raise
            return timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as err:
        if pretrained:
            raise WeightsError(
                f"could not load timm's pretrained weights for {name} ({type(err).__name__}: {err}); offline? "
                f"put the model's weights file (model.safetensors or pytorch_model.bin) somewhere and pass its "
                f"path as loss_net.weights, or weights=random for a smoke run whose results mean little") from None
        raise NetworkError(f"timm could not build {name} with {kwargs}: {type(err).__name__}: {err}") from None


def _sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256_of(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.cache
def _sha256_of(path: str, mtime_ns: int, size: int) -> str:  # once per file version per process
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


__all__ = ["BUILDER", "NORMALIZATIONS", "SPEC_KEYS", "DeclaredNetwork", "NetworkError", "NetworkSpec",
           "declare", "declare_from_settings", "declare_networks", "is_declaration", "parse_spec"]
