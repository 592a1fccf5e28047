"""What a task is: its training pairs, its generator, the metrics it reports.

A new image-to-image task (denoising, JPEG artefacts) is a subclass here or in the user's own module plus a
file in ``conf/task/`` whose ``_target_`` names it; the training loop and the search do not change.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import get_class
from torch import nn

from ..errors import ConfigValueError
from ..lossnet.loss import PerceptualLoss
from ..settings import ComponentSettings, DataSettings, MetricsSettings
from .data import DataError, load_image, load_split, sample_image
from .metric_registry import (
    DEFAULT_OBJECTIVES,
    RESTORATION,
    STYLE,
    MetricContext,
    TaskMetrics,
    check_image_side,
    compute_metrics,
    lpips_graded,
    metric_set,
)
from .metrics import LPIPSMetric
from .transforms import center_crop, check_min_size, crop_to_multiple, degrade, random_crops


def target_class(component: ComponentSettings) -> type:
    """The class named by ``component.target`` (a ``_target_``), or a one-line ConfigValueError."""
    target = component.target
    try:
        return get_class(str(target))
    except Exception:
        raise ConfigValueError(f"cannot import _target_ {target!r}: is the module on PYTHONPATH?") from None


def construct(component: ComponentSettings, **extra: Any) -> Any:
    """Call the class named by ``component.target`` with its ``params`` and ``extra``.

    Unlike ``hydra.utils.instantiate`` this lets our own errors (DataError, ...) through unwrapped, so the
    CLI can print them as one line.
    """
    params, target = dict(component.params), component.target
    cls = target_class(component)
    try:
        return cls(**params, **extra)
    except TypeError as err:
        if "argument" not in str(err):
            raise
        raise ConfigValueError(f"{target}: {err}") from None


def _stack_if_same_shape(images: list[torch.Tensor]) -> list[torch.Tensor]:
    """One batch when all validation images share a shape (fixed crops), else one batch per image."""
    if len({tuple(img.shape) for img in images}) == 1:
        return [torch.stack(images)]
    return [img.unsqueeze(0) for img in images]


#: ``data.on_device=auto`` keeps the training images on a GPU when, as stored (float32), they take at most
#: this share of its memory for each trial running on it at once.
DEVICE_SHARE = 0.1
#: How many trials run at once on this process's GPU: the launcher sets it for each worker it pins to a GPU.
TRIALS_PER_DEVICE_ENV = "LAYERSEARCH_TRIALS_PER_DEVICE"


def trials_sharing_device() -> int:
    """The trials sharing this process's device (``LAYERSEARCH_TRIALS_PER_DEVICE``, else 1)."""
    try:
        return max(1, int(os.environ.get(TRIALS_PER_DEVICE_ENV) or 1))
    except ValueError:
        return 1


def keep_on_device(setting: Any, nbytes: int, device: torch.device, sharing: int = 1) -> bool:
    """Whether the training images live on ``device`` (``data.on_device``).

    ``true`` or ``false`` as given; ``auto``: on a GPU when ``nbytes x sharing`` is at most ``DEVICE_SHARE``
    of its memory (the sample photos, ~50 MB, are; DIV2K's 800 images, ~27 GB as float32, are not), and
    always on the CPU, which is where they are anyway.
    """
    if isinstance(setting, bool):
        return setting
    if setting not in (None, "auto"):
        raise ConfigValueError(f"data.on_device must be auto, true or false, got {setting!r}")
    if device.type != "cuda":
        return True
    return nbytes * max(1, sharing) <= DEVICE_SHARE * torch.cuda.get_device_properties(device).total_memory


def _move_images(images: list[torch.Tensor], device: torch.device, nbytes: int) -> list[torch.Tensor]:
    try:
        return [img.to(device) for img in images]
    except torch.cuda.OutOfMemoryError:
        raise DataError(f"the training images ({nbytes / 2**30:.1f} GiB as float32) do not fit on {device}: "
                        "set data.on_device=false to keep them in host memory") from None


class Task:
    """Base class. Subclasses set ``objectives`` and implement the data, generator and evaluation hooks.

    Args:
        data: the ``data`` settings (source and splits).
        model: the ``model`` settings: the generator class (``_target_``) and its arguments.
        metrics: the ``metrics`` settings: ``names``, the metrics ``evaluate`` computes (`build_task` resolves them
            with the objectives; None = `metric_set`'s default), and the LPIPS net and backbone weights, loaded
            only when one of them needs LPIPS.
        device: where validation data, metrics and generators live.
    """

    #: Metric names ``evaluate`` can report (registered in ``trial.metric_registry``); any can be a sweep objective.
    metrics: tuple[str, ...] = ()
    #: The registry's set these belong to (`RESTORATION` or `STYLE`).
    metric_kind = RESTORATION
    #: The sweep's default objectives, the first one primary (it drives pruning).
    objectives: tuple[str, ...] = ()
    name = "task"
    #: ``bf16`` or ``fp32``: how ``generate`` runs the generator. `train` sets it to the run's precision, so
    #: that a run is evaluated in the precision it trains in (and records).
    precision = "fp32"

    @classmethod
    def label(cls, params: Mapping[str, Any]) -> str:
        """The task's name for records (MLflow tags), from its config params, without building it."""
        return cls.name

    def __init__(self, data: DataSettings, model: ComponentSettings, metrics: MetricsSettings,
                 device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model
        #: The metrics ``evaluate`` computes, objectives first (`metric_set`).
        self.reported: tuple[str, ...] = (tuple(metrics.names) if metrics.names is not None
                                          else metric_set(self.metric_kind))
        # LPIPS's backbone is loaded only for a metric that reads it: a run scored by piq and PSNR needs no
        # ImageNet AlexNet, and says nothing of LPIPS weights it never used.
        self.lpips: LPIPSMetric | None = None
        #: ``{metric: [value per validation image]}`` of the latest `evaluate` (`mean_scores`).
        self.last_per_image: dict[str, list[float]] = {}
        if lpips_graded(self.reported):
            self.lpips = LPIPSMetric(net=metrics.lpips.net, weights=metrics.lpips.weights).to(self.device)
        train = load_split(data, "train")
        self.train_names = [name for name, _ in train]
        nbytes = sum(img.numel() * img.element_size() for _, img in train)
        self.train_on_device = keep_on_device(data.on_device, nbytes, self.device,
                                              trials_sharing_device())
        # On the device, crops and flips are cut there without a copy per step (the fast path, for small
        # data); otherwise the images stay in host memory and each batch is cut there, then copied.
        self.train_images = [img for _, img in train]
        if self.train_on_device:
            self.train_images = _move_images(self.train_images, self.device, nbytes)

    def build_generator(self) -> nn.Module:
        return construct(self.model).to(self.device)

    def generate(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """Evaluation forward: eval mode, no grad, in ``self.precision`` (bf16 autocast or fp32), output in
        float32 clamped to [0, 1]. The metrics then compute in float32 whatever the precision."""
        was_training = model.training
        model.eval()
        with torch.no_grad(), torch.autocast(inputs.device.type, torch.bfloat16, enabled=self.precision == "bf16"):
            out = model(inputs).float().clamp(0, 1)
        model.train(was_training)
        return out

    def training_crops(self, size: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """``batch_size x 3 x size x size`` random crops (flipped at random) of the training images, on the
        device: cut there when the images live there, else cut in host memory, pinned and copied."""
        crops = random_crops(self.train_images, size, batch_size, generator)
        if crops.is_cuda or self.device.type != "cuda":
            return crops
        # Pinned, the copy is asynchronous; torch keeps the pinned block until the copy is done.
        return crops.pin_memory().to(self.device, non_blocking=True)

    def setup_loss(self, loss_fn: PerceptualLoss) -> None:
        """Fix per-task targets in the loss once (style Grams); nothing by default."""

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) for one training step, on the task's device."""
        raise NotImplementedError

    def loss(self, loss_fn: PerceptualLoss, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return loss_fn(outputs, targets)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Mean validation scores, keyed by metric name."""
        raise NotImplementedError

    def mean_scores(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], ctx: MetricContext) -> dict[str, float]:
        """Each of ``self.reported`` over ``(outputs, targets)`` batches, averaged over all images in float64.

        The per-image values are kept in ``self.last_per_image`` (validation order, ``self.val_names``): paired
        comparisons (``confirm``'s race) block on the image."""
        scores: dict[str, list[torch.Tensor]] = {name: [] for name in self.reported}
        for outputs, targets in batches:
            for name, values in compute_metrics(scores, outputs, targets, ctx).items():
                scores[name].append(values.flatten().cpu())
        per_image = {k: torch.cat(v).double() for k, v in scores.items()}
        self.last_per_image = {k: v.tolist() for k, v in per_image.items()}
        return {k: float(v.mean()) for k, v in per_image.items()}

    def baseline(self) -> dict[str, float] | None:
        """Scores of a no-learning reference (bicubic for SR), or None."""
        return None

    def preview(self, model: nn.Module, n: int) -> tuple[list[str], list[list[torch.Tensor]]]:
        """Column titles and rows of ``3 x H x W`` images in [0, 1] for a result grid."""
        raise NotImplementedError


class SuperResolution(Task):
    """Super-resolution by ``scale`` (x4 by default).

    Training pairs: random ``crop`` px HR crops (with flips) and their degraded LR versions. Validation:
    centre ``val_crop`` crops of the validation images (or whole images cut to a multiple of ``scale``),
    degraded once per process. Metrics: ``lpips`` (RGB), ``psnr_y`` and ``ssim_y`` (Y channel, ``scale`` px
    shaved from each border).
    """

    metrics = TaskMetrics(RESTORATION)  # lpips, psnr_y, ssim_y, the piq ones, any registered for RESTORATION
    objectives = DEFAULT_OBJECTIVES[RESTORATION]
    name = "sr_x4"

    @classmethod
    def label(cls, params):
        return f"sr_x{params['scale']}" if "scale" in params else cls.name

    def __init__(self, data, model, metrics, device="cpu", scale: int = 4, blur_sigma: float = 0.0,
                 crop: int = 96, val_crop: int | None = 192):
        super().__init__(data, model, metrics, device)
        if crop % scale:
            raise DataError(f"task.crop ({crop}) must be a multiple of task.scale ({scale})")
        self.scale, self.blur_sigma, self.crop = scale, blur_sigma, crop
        self.name = f"sr_x{scale}"
        check_min_size(list(zip(self.train_names, self.train_images, strict=True)), crop, "the training set")
        val = load_split(data, "val")
        if val_crop:
            check_min_size(val, val_crop, "the validation set")
        hr = [crop_to_multiple(center_crop(img, val_crop), scale).to(self.device) for _, img in val]
        self.val_names = [name for name, _ in val]
        self.val_hr = _stack_if_same_shape(hr)
        self.val_lr = [degrade(batch, scale, blur_sigma) for batch in self.val_hr]
        check_image_side(self.reported, min(min(b.shape[-2:]) for b in self.val_hr) - 2 * scale,
                         f"the validation crops (task.val_crop={val_crop}) less the {scale} px shave")
        self._baseline: dict[str, float] | None = None

    def build_generator(self) -> nn.Module:
        return construct(self.model, scale=self.scale).to(self.device)

    def sample_batch(self, batch_size, generator):
        hr = self.training_crops(self.crop, batch_size, generator)
        return degrade(hr, self.scale, self.blur_sigma), hr

    def _score(self, outputs: list[torch.Tensor]) -> dict[str, float]:
        ctx = MetricContext(scale=self.scale, lpips=self.lpips, cache_target=True)
        return self.mean_scores(zip(outputs, self.val_hr, strict=True), ctx)

    def evaluate(self, model):
        return self._score([self.generate(model, lr) for lr in self.val_lr])

    def bicubic(self, lr: torch.Tensor) -> torch.Tensor:
        return F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False).clamp(0, 1)

    def baseline(self):
        if self._baseline is None:
            self._baseline = self._score([self.bicubic(lr) for lr in self.val_lr])
        return dict(self._baseline)

    def preview(self, model, n):
        rows = []
        for lr, hr in zip(self.val_lr, self.val_hr, strict=True):
            sr = self.generate(model, lr)
            for i in range(lr.shape[0]):
                if len(rows) < n:
                    rows.append([self.bicubic(lr[i : i + 1])[0], sr[i], hr[i]])
        return ["bicubic input", "output", "target"], [[img.cpu() for img in row] for row in rows]


def load_style_image(spec: str, size: int | None) -> torch.Tensor:
    """``sample:<name>`` (scikit-image's photos) or a path; resized so the shorter side is ``size`` px."""
    image = sample_image(spec.split(":", 1)[1]) if spec.startswith("sample:") else load_image(spec)
    if size:
        h, w = image.shape[-2:]
        factor = size / min(h, w)
        new = (max(1, round(h * factor)), max(1, round(w * factor)))
        image = F.interpolate(image[None], size=new, mode="bicubic", antialias=True, align_corners=False)[0]
    return image.clamp(0, 1)


class StyleTransfer(Task):
    """Fast style transfer: content images in, stylised images out, one fixed style image.

    Metrics: ``content_lpips`` (stylised vs content) and ``style_distance`` (Gram distance to the style
    image on the LPIPS backbone's features, independent of the layers being searched).
    """

    metrics = TaskMetrics(STYLE)  # content_lpips, style_distance
    metric_kind = STYLE
    objectives = DEFAULT_OBJECTIVES[STYLE]
    name = "style"

    def __init__(self, data, model, metrics, device="cpu", style_image: str = "sample:gravel",
                 style_size: int | None = 256, crop: int = 128, val_crop: int | None = 256):
        super().__init__(data, model, metrics, device)
        self.crop = crop
        self.style_image = load_style_image(str(style_image), style_size).to(self.device)
        check_min_size(list(zip(self.train_names, self.train_images, strict=True)), crop, "the training set")
        val = load_split(data, "val")
        if val_crop:
            check_min_size(val, val_crop, "the validation set")
        # The generator downsamples twice, so content sizes must be multiples of 4.
        content = [crop_to_multiple(center_crop(img, val_crop), 4).to(self.device) for _, img in val]
        self.val_names = [name for name, _ in val]
        self.val_content = _stack_if_same_shape(content)

    def setup_loss(self, loss_fn):
        loss_fn.to(self.device)
        loss_fn.set_style_target(self.style_image[None])

    def sample_batch(self, batch_size, generator):
        content = self.training_crops(self.crop, batch_size, generator)
        return content, content

    def evaluate(self, model):
        ctx = MetricContext(lpips=self.lpips, style_image=self.style_image[None], cache_target=True)
        return self.mean_scores(((self.generate(model, content), content) for content in self.val_content), ctx)

    def preview(self, model, n):
        rows = []
        for content in self.val_content:
            out = self.generate(model, content)
            for i in range(content.shape[0]):
                if len(rows) < n:
                    rows.append([content[i], out[i], self.style_image])
        return ["content", "output", "style"], [[img.cpu() for img in row] for row in rows]


def task_class(task: ComponentSettings) -> type[Task]:
    """The Task subclass named by ``task.target``, without building it (no data loading)."""
    cls = target_class(task)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ConfigValueError(f"task._target_ {task.target!r} is not a layersearch Task subclass")
    return cls


def build_task(task: ComponentSettings, data: DataSettings, model: ComponentSettings, metrics: MetricsSettings,
               device, objectives: Sequence[str] | None = None) -> Task:
    """Instantiate the task named by ``task.target`` (conf/task/*.yaml) with its params, computing the
    objectives (``study.objectives``; None = the task's) and ``metrics.names`` (`metric_set`)."""
    cls = task_class(task)
    names = metric_set(cls.metric_kind, objectives or cls.objectives, metrics.names)
    return construct(task, data=data, model=model, metrics=dataclasses.replace(metrics, names=list(names)),
                     device=device)
