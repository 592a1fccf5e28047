"""The metrics layersearch knows: one registry entry per metric, read by every place that names one.

A `Metric` holds everything about one quantity:

- ``name``: the one string used in configs, Optuna, MLflow, reports and tables (``psnr_y``);
- ``direction``: ``minimize`` or ``maximize`` (a study's default direction for it; ``study.directions`` may not
  contradict it);
- ``fmt``: the format spec it prints with (``.2f``), and ``family``, the fragment that makes a column named
  otherwise print the same way (``psnr``: ``feature psnr_y``, ``val_psnr``);
- ``fn``: how it is computed, ``fn(outputs, targets, ctx) -> [N]``, per image, from ``N x 3 x H x W`` RGB in
  [0, 1] and a `MetricContext` (``ctx.scale``: the border shaved, the SR scale; ``ctx.lpips``: the LPIPS
  network; ``ctx.style_image``);
- ``needs``: what ``fn`` reads from the context besides ``scale`` (``lpips``: the LPIPS network built from
  ``metrics.lpips.net``/``weights``, whose backbone then grades the trials; ``style_image``);
- ``task``: which built-in set it belongs to: `RESTORATION` (an output against its target: `layersearch score`,
  `Trial.score`, the super-resolution task) or `STYLE` (the style task);
- ``default``: reported without being asked for (``psnr_y``, ``ssim_y``); the piq metrics are computed only when
  an objective or ``metrics.names`` names them (VSI costs 0.3 s per batch, MS-SSIM needs 161 px images);
- ``min_side``: the smallest image side it accepts after the border shave, checked before a run starts.

Which metrics a run computes is `metric_set`: ``metrics.names`` when given, else the objectives and the set's
default metrics that need no network. LPIPS (which needs ImageNet AlexNet/VGG weights) is thus computed only
when it is an objective or named, and a run scored by ``haarpsi``/``psnr_y`` needs nothing downloaded.

Who reads it: the tasks (``SuperResolution.metrics`` and ``StyleTransfer.metrics`` are the registered names of
their set, ``Task.mean_scores`` computes them), ``trial.score`` (`layersearch score`, `Trial.score`), the study's
objective directions (`METRIC_DIRECTIONS`), the tables and logs (`format_metric`, `format_table`), the CLI, and
the "a loss network graded by its own LPIPS backbone" warnings (`LPIPS_NETS`, `self_graded_archs`,
`lpips_graded`). Adding a metric is one `register` call (here, or in the user's own code before the run); the
metric is then computed, reported, printed and optimised in its direction with no other change. Names that
are not registered (a user's own training reports what it likes) print with `DEFAULT_METRIC_FORMAT` and need
``study.directions``.

This module imports no torch, lpips or scikit-image (the CLI reads it without them): the computations load
``trial.metrics`` when first called.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .metrics import LPIPSMetric

__all__ = [
    "DEFAULT_METRIC_FORMAT",
    "DEFAULT_OBJECTIVES",
    "DIRECTIONS",
    "LPIPS_NETS",
    "METRICS",
    "METRIC_DIRECTIONS",
    "NEEDS",
    "RESTORATION",
    "STYLE",
    "Metric",
    "MetricContext",
    "TaskMetrics",
    "compute_metrics",
    "format_metric",
    "format_table",
    "get_metric",
    "check_image_side",
    "metric_set",
    "lpips_graded",
    "metric_format",
    "metric_names",
    "register",
    "restoration_metrics",
    "self_graded_archs",
    "unregister",
]

DIRECTIONS = ("minimize", "maximize")
#: The metric sets of the built-in tasks. RESTORATION: an output scored against its target with the border
#: shaved (`layersearch score`, `Trial.score`, super-resolution); STYLE: the style task's.
RESTORATION, STYLE = "restoration", "style"
#: What a metric may need from its `MetricContext` besides ``scale``.
NEEDS = ("lpips", "style_image")
#: The objectives a study of each set optimises when ``study.objectives`` is null, the first one primary.
DEFAULT_OBJECTIVES: dict[str, tuple[str, ...]] = {RESTORATION: ("lpips", "psnr_y"),
                                                  STYLE: ("content_lpips", "style_distance")}
#: Unknown user metrics: four significant digits whatever the scale ("#": keep trailing zeros).
DEFAULT_METRIC_FORMAT = "#.4g"

#: LPIPS trunk (``metrics.lpips.net``) -> the torchvision architecture whose ``features`` it slices: the loss
#: network that is the same network with the same weights.
LPIPS_NETS: dict[str, str] = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}


@dataclass(frozen=True)
class MetricContext:
    """What a metric's ``fn`` may read besides the outputs and targets.

    Attributes:
        scale: pixels shaved from each border before scoring (the SR scale; 0 for none).
        lpips: the LPIPS network (`layersearch.trial.metrics.LPIPSMetric`), for metrics that need ``lpips``.
        style_image: ``1 x 3 x H x W`` RGB in [0, 1], for metrics that need ``style_image``.
        cache_target: the targets are the same tensors at every call (a validation set): LPIPS keeps their
            features (see ``LPIPSMetric.forward``).
    """

    scale: int = 0
    lpips: LPIPSMetric | None = None
    style_image: torch.Tensor | None = None
    cache_target: bool = False


MetricFn = Callable[["torch.Tensor", "torch.Tensor", MetricContext], "torch.Tensor"]


@dataclass(frozen=True)
class Metric:
    """One metric: see the module docstring for each field.

    ``fn(outputs, targets, ctx)`` takes ``N x 3 x H x W`` RGB in [0, 1] and returns ``[N]`` values, one per
    image (any dtype and device; callers average them). ``family`` defaults to ``name``.
    """

    name: str
    direction: str
    fmt: str
    fn: MetricFn
    needs: tuple[str, ...] = ()
    task: str = RESTORATION
    family: str = ""
    default: bool = True
    min_side: int = 0

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"a metric needs a name, got {self.name!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"metric {self.name}: direction must be minimize or maximize, got {self.direction!r}")
        format(1.0, self.fmt)  # a bad spec fails here, not in the middle of a report
        bad = [n for n in self.needs if n not in NEEDS]
        if bad:
            raise ValueError(f"metric {self.name}: unknown need {bad[0]!r}; choose from {', '.join(NEEDS)}")
        object.__setattr__(self, "needs", tuple(self.needs))
        object.__setattr__(self, "family", (self.family or self.name).lower())

    def compute(self, outputs: torch.Tensor, targets: torch.Tensor, ctx: MetricContext | None = None) -> torch.Tensor:
        """``[N]`` values of this metric, one per image (see ``fn``); ValueError when ``ctx`` lacks a need."""
        ctx = ctx or MetricContext()
        missing = [n for n in self.needs if getattr(ctx, n) is None]
        if missing:
            raise ValueError(f"metric {self.name} needs {missing[0]}, which this scoring does not provide")
        return self.fn(outputs, targets, ctx)


_REGISTRY: dict[str, Metric] = {}
#: Every registered metric by name, in registration order (a read-only view that follows `register`).
METRICS: Mapping[str, Metric] = MappingProxyType(_REGISTRY)


def register(metric: Metric) -> Metric:
    """Add ``metric`` to the registry (ValueError if its name is taken); returns it."""
    if metric.name in _REGISTRY:
        raise ValueError(f"metric {metric.name!r} is already registered")
    _REGISTRY[metric.name] = metric
    return metric


def unregister(name: str) -> Metric:
    """Remove and return the metric ``name`` (KeyError if it is not registered)."""
    return _REGISTRY.pop(name)


def get_metric(name: str) -> Metric:
    """The registered metric ``name``; KeyError naming the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(_REGISTRY)}") from None


def metric_names(task: str | None = None) -> tuple[str, ...]:
    """The registered names (of one built-in set, `RESTORATION` or `STYLE`, when ``task`` is given)."""
    return tuple(name for name, m in _REGISTRY.items() if task is None or m.task == task)


def restoration_metrics() -> tuple[str, ...]:
    """Every registered restoration metric (``lpips``, ``psnr_y``, ``ssim_y``, the piq ones, and any registered
    for `RESTORATION` since): the names `layersearch score`, `Trial.score` and super-resolution can report."""
    return metric_names(RESTORATION)


def metric_set(task: str, objectives: Sequence[str] | None = None,
               names: Sequence[str] | None = None) -> tuple[str, ...]:
    """The metrics a run of set ``task`` computes and reports, objectives first.

    Args:
        task: `RESTORATION` or `STYLE`.
        objectives: the study's objectives (``study.objectives``); None or empty = the set's
            `DEFAULT_OBJECTIVES`. Names that are not registered metrics of the set (a user's own) are skipped.
        names: ``metrics.names``: exactly these besides the objectives; None = the set's ``default`` metrics
            that need no network (``psnr_y``, ``ssim_y``).

    ConfigValueError names an unknown entry of ``names``.
    """
    from ..errors import ConfigValueError

    known = metric_names(task)
    if names is not None:
        bad = [n for n in names if n not in known]
        if bad:
            raise ConfigValueError(f"metrics.names: {bad[0]!r} is not a {task} metric; choose from "
                                   f"{', '.join(known)}")
        chosen = list(names)
    else:
        chosen = [n for n in known if _REGISTRY[n].default and not _REGISTRY[n].needs]
    wanted = [o for o in (objectives or DEFAULT_OBJECTIVES.get(task, ())) if o in known]
    return tuple(dict.fromkeys([*wanted, *chosen]))


def check_image_side(names: Sequence[str], side: int, what: str) -> None:
    """ConfigValueError when an image of smallest side ``side`` px (after the shave) is too small for a metric
    of ``names``; ``what`` says which images and which key sets their size."""
    from ..errors import ConfigValueError

    for name in names:
        metric = _REGISTRY.get(name)
        if metric is not None and side < metric.min_side:
            raise ConfigValueError(f"{name} needs images of at least {metric.min_side} px after the border shave; "
                                   f"{what} are {side} px")


class _Directions(Mapping[str, str]):
    # A live view: a metric registered later has its direction here too.
    def __getitem__(self, name: str) -> str:
        return _REGISTRY[name].direction

    def __iter__(self) -> Iterator[str]:
        return iter(_REGISTRY)

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __repr__(self) -> str:
        return repr(dict(self))


#: Metric name -> the direction to optimise, for every registered metric (a live, read-only view).
METRIC_DIRECTIONS: Mapping[str, str] = _Directions()


class TaskMetrics:
    """A `Task` class attribute: the names of the registered metrics of one set, read at each access, so a
    metric registered before the task runs is reported by it."""

    def __init__(self, task: str):
        self.task = task

    def __get__(self, obj: Any, owner: type | None = None) -> tuple[str, ...]:
        return metric_names(self.task)


def compute_metrics(names: Sequence[str] | Mapping[str, Any], outputs: torch.Tensor, targets: torch.Tensor,
                    ctx: MetricContext) -> dict[str, torch.Tensor]:
    """``{name: [N] values}`` for each metric of ``names``, in that order (see `Metric.compute`)."""
    return {name: get_metric(name).compute(outputs, targets, ctx) for name in names}


def lpips_graded(names: Sequence[str]) -> list[str]:
    """The registered metrics among ``names`` computed on the LPIPS backbone's features (those that need
    ``lpips``): they reward a loss network that is that backbone."""
    return [n for n in names if n in _REGISTRY and "lpips" in _REGISTRY[n].needs]


def self_graded_archs(archs: Sequence[str], lpips_net: str) -> list[str]:
    """The loss networks among ``archs`` that are the backbone of LPIPS net ``lpips_net`` (``alex``, ``vgg``,
    ``squeeze``): LPIPS grades such trials with their own features."""
    backbone = LPIPS_NETS.get(str(lpips_net))
    return [a for a in archs if a == backbone]


def metric_format(name: str) -> str:
    """The format spec of a metric or column ``name``.

    A registered name prints with its own ``fmt``. Any other name (``feature psnr_y``, ``val_lpips``, a user's
    ``val_psnr``) prints like the registered metric whose ``family`` it contains, among those whose format is
    not the default (the longest family wins, then the first registered); else `DEFAULT_METRIC_FORMAT`.
    """
    key = name.lower()
    metric = _REGISTRY.get(name) or _REGISTRY.get(key)
    if metric is not None:
        return metric.fmt
    hits = [m for m in _REGISTRY.values() if m.fmt != DEFAULT_METRIC_FORMAT and m.family in key]
    return max(hits, key=lambda m: len(m.family)).fmt if hits else DEFAULT_METRIC_FORMAT


def format_metric(name: str, value: float | None, signed: bool = False) -> str:
    """``value`` of metric ``name`` as people should read and compare it (its registry format).

    ``psnr_y`` two decimals (``30.09``), ``lpips``/``content_lpips`` four significant digits, trailing zeros kept (``0.008512``, ``0.3000``),
    ``ssim_y`` four decimals, ``style_distance`` and unknown metrics four significant digits. ``name`` may
    carry a prefix (``feature psnr_y``, ``val_lpips``): see `metric_format`.
    ``signed=True`` prints a sign, for differences (``+0.09``). None is ``n/a``; inf and nan print as such.
    """
    if value is None:
        return "n/a"
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    return format(value, ("+" if signed else "") + metric_format(name))


def format_table(rows: Mapping[str, Mapping[str, float]], columns: Sequence[str]) -> str:
    """A plain-text table: one row per name, one column per metric, each value as ``format_metric`` prints it."""
    width = max([len("run"), *map(len, rows)])
    cell = max([14, *map(len, columns)])
    lines = [f"{'run':<{width}}  " + "  ".join(f"{c:>{cell}}" for c in columns)]
    for name, values in rows.items():
        cells = [f"{format_metric(c, values[c]) if c in values else '-':>{cell}}" for c in columns]
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


# --- the built-in metrics (trial.metrics has the conventions: Y channel, shave, LPIPS range) -------------


def _lpips(outputs: torch.Tensor, targets: torch.Tensor, ctx: MetricContext) -> torch.Tensor:
    assert ctx.lpips is not None  # Metric.compute checked the need
    return ctx.lpips(outputs, targets, cache_target=ctx.cache_target)


def _psnr_y(outputs: torch.Tensor, targets: torch.Tensor, ctx: MetricContext) -> torch.Tensor:
    from .metrics import psnr_y

    return psnr_y(outputs, targets, ctx.scale)


def _ssim_y(outputs: torch.Tensor, targets: torch.Tensor, ctx: MetricContext) -> torch.Tensor:
    from .metrics import ssim_y

    return ssim_y(outputs, targets, ctx.scale)


def _style_distance(outputs: torch.Tensor, targets: torch.Tensor, ctx: MetricContext) -> torch.Tensor:
    from .metrics import style_distance

    assert ctx.lpips is not None and ctx.style_image is not None  # Metric.compute checked the needs
    return style_distance(ctx.lpips, outputs, ctx.style_image)


# Formats: enough digits to show the differences that matter between trials. PSNR moves by hundredths of a dB
# between seeds; LPIPS by 1e-4 on values near 0.01, so it needs significant digits, not decimals; SSIM lives
# in [0, 1] and moves in the third or fourth decimal.
register(Metric("lpips", "minimize", "#.4g", _lpips, needs=("lpips",)))
register(Metric("psnr_y", "maximize", ".2f", _psnr_y, family="psnr"))
register(Metric("ssim_y", "maximize", ".4f", _ssim_y, family="ssim", min_side=11))
# The style task: the output against its content image, and Gram distance to the style image on the LPIPS
# backbone's layers (independent of the layers being searched).
register(Metric("content_lpips", "minimize", "#.4g", _lpips, needs=("lpips",), task=STYLE))
register(Metric("style_distance", "minimize", "#.4g", _style_distance, needs=("lpips", "style_image"), task=STYLE))


def _piq(name: str) -> MetricFn:
    def compute(outputs: torch.Tensor, targets: torch.Tensor, ctx: MetricContext) -> torch.Tensor:
        from .metrics import piq_metric

        return piq_metric(name, outputs, targets, ctx.scale)

    compute.__name__ = f"_{name}"
    return compute


# piq's weight-free perceptual metrics (trial.metrics.piq_metric has the convention), computed when asked for:
# an objective or metrics.names. Human-judgment agreement (SRCC, piq's README): HaarPSI 0.87 / 0.89 and VSI
# 0.90 / 0.88 on TID2013 / KADID-10k (LPIPS-VGG 0.67 / 0.72); DSS 0.63 on PIPAL's GAN and SR artefacts.
# The smallest sides: HaarPSI's Haar filters at 3 scales need 16 px; DSS's 8 x 8 DCT blocks at two scales give
# NaN below 32 px; MS-SSIM's 5 scales of an 11 px window need 161 px (piq refuses less).
for _name, _side in (("haarpsi", 16), ("dss", 32), ("vsi", 1), ("ms_ssim", 161)):
    register(Metric(_name, "maximize", ".4f", _piq(_name), default=False, min_side=_side))
