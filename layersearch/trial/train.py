"""One training run: a generator trained with a perceptual loss, scored every ``eval_every`` steps.

It reports ``(step, metrics)`` to a callback and knows nothing of Optuna: the sweep's callback reports
to the trial and raises to prune.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from ..errors import ConfigValueError, LayersearchError, OutputExistsError
from ..lossnet.loss import LossConfig, PerceptualLoss
from ..lossnet.weights import any_random, weights_label
from ..outputs import (
    RANDOM_BANNER,
    atomic_write_json,
    atomic_write_text,
    default_mode,
    save_grid,
    timestamped_dir,
)
from ..progress import progress
from ..settings import Settings, TrainerSettings, settings_to_dict
from .tasks import Task, build_task

Callback = Callable[[int, dict[str, float]], None]


class DeviceError(LayersearchError, ValueError):
    """A device that this machine does not have."""


class NonFiniteLossError(LayersearchError, RuntimeError):
    """The training loss became NaN or infinite; the run stops at once."""


def _visible_cuda_devices() -> str:
    names = []
    for i in range(torch.cuda.device_count()):
        try:
            names.append(f"cuda:{i} ({torch.cuda.get_device_name(i)})")
        except Exception:  # a name is a courtesy; the index is what matters
            names.append(f"cuda:{i}")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    where = f"; CUDA_VISIBLE_DEVICES={visible} numbers them from 0" if visible is not None else ""
    return (", ".join(names) or "none") + where


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cuda`` or ``cuda:<index>`` only if this process sees that GPU.

    Raises:
        DeviceError: an unknown name, CUDA on a machine without it, or an index this process does not see
            (the error lists the devices it does see).
    """
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not name.startswith("cuda"):
        raise DeviceError(f"unknown trainer.device {name!r}; choose auto, cpu, cuda or cuda:<index>")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"trainer.device={name} is not a device name; write cuda or cuda:<index>") from None
    if not torch.cuda.is_available():
        raise DeviceError(f"trainer.device={name} but this machine has no CUDA device; use auto or cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"trainer.device={name} but this process sees {torch.cuda.device_count()} CUDA device(s): "
                          f"{_visible_cuda_devices()}")
    return device


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (x86 AVX512-BF16 or AMX), so bf16 autocast pays on it.

    torch asks the CPU through these (private) functions; a test fails if a torch update removes them.
    """
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def cuda_has_native_bf16(device: torch.device) -> bool:
    """Compute capability 8.0 (Ampere) or later: bf16 tensor cores. On a T4 or V100 cuDNN has no bf16
    convolutions and autocast falls back to slow kernels."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


_WARNED_SLOW_BF16: set[str] = set()


def _use_bf16(precision: str, device: torch.device) -> bool:
    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigValueError(f"unknown trainer.precision {precision!r}; choose auto, fp32 or bf16")
    if precision == "fp32":
        return False
    native = (device.type == "cuda" and cuda_has_native_bf16(device)) or (device.type == "cpu" and cpu_has_native_bf16())
    if precision == "bf16":
        # Asked for explicitly: done (it computes correctly), with one warning per device when it will be slow.
        if device.type == "cuda" and not native and str(device) not in _WARNED_SLOW_BF16:
            _WARNED_SLOW_BF16.add(str(device))
            major, minor = torch.cuda.get_device_capability(device)
            warnings.warn(f"trainer.precision=bf16 on {torch.cuda.get_device_name(device)} (compute capability "
                          f"{major}.{minor} < 8.0): no bf16 tensor cores, so it runs slow fallback kernels; "
                          "trainer.precision=auto trains in fp32 there", stacklevel=3)
        return True
    # auto. On a CPU with bf16 units, quickstart trials run 1.5-1.8x faster in bf16 with the same ranking of
    # losses within seed noise (benchmarks/precision.py); without bf16 units (CPU, or a GPU before Ampere) bf16
    # is emulated or falls back to slow kernels, so fp32 stays.
    return native


def precision_used(trainer: TrainerSettings, device: torch.device) -> str:
    """``bf16`` or ``fp32``: what ``trainer.precision`` means on ``device``; recorded next to results."""
    return "bf16" if _use_bf16(trainer.precision, device) else "fp32"


def _channels_last(value: Any, device: torch.device, bf16: bool) -> bool:
    """Whether the generator and its inputs run channels_last: ``auto`` = on CUDA, and with bf16 on a CPU
    (the GPU recipe; on 2 CPU cores, with the loss network channels_last already, the generator's layout
    changed a quickstart step by only a few percent in either precision)."""
    if value in (None, "auto"):
        return device.type == "cuda" or bf16
    if not isinstance(value, bool):
        raise ConfigValueError(f"trainer.channels_last must be auto, true or false, got {value!r}")
    return value


def _check_every(value: Any, device: torch.device, eval_every: int) -> int:
    """Steps between reads of the non-finite flag: ``auto`` is every step on the CPU (a read costs nothing
    there, and a bad step then never reaches the optimiser), only at evaluations on a GPU."""
    if value in (None, "auto"):
        return 1 if device.type == "cpu" else eval_every
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigValueError(f"trainer.check_every must be auto or an integer >= 1, got {value!r}")
    return value


def _raise_if_non_finite(first_bad_step: int, loss_fn: PerceptualLoss) -> None:
    if first_bad_step:
        terms = ", ".join(f"{k}={v.item():.4g}" for k, v in loss_fn.last_terms.items())
        raise NonFiniteLossError(
            f"training loss became non-finite at step {first_bad_step} (last step's terms: {terms}); "
            "lower trainer.lr or the loss weights"
        )


@dataclass
class TrainResult:
    """What a run produced: final validation scores, their history, and where the time went."""

    metrics: dict[str, float]
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    steps: int = 0
    train_seconds: float = 0.0  # optimisation steps, data sampling included
    eval_seconds: float = 0.0  # validation scoring
    callback_seconds: float = 0.0  # time spent in the callback (tracking, pruning decisions)
    #: The latest evaluation's scores per validation image (``task.val_names`` order), for paired comparisons.
    per_image: dict[str, list[float]] = field(default_factory=dict)


def train(
    task: Task,
    loss_fn: PerceptualLoss,
    trainer: TrainerSettings,
    callback: Callback | None = None,
    model: torch.nn.Module | None = None,
    result: TrainResult | None = None,
) -> tuple[torch.nn.Module, TrainResult]:
    """Train ``task``'s generator with ``loss_fn`` for ``trainer.steps`` Adam steps.

    Every ``eval_every`` steps and after the last one, the validation scores (plus the mean training loss
    terms since the previous evaluation, as ``train/<term>``) go to ``callback(step, metrics)``. An
    exception raised by the callback (e.g. a pruning signal) ends the run and propagates.

    ``trainer.compile`` compiles the generator (a wrapper; ``model`` stays eager) and ``loss_fn``'s
    feature extractor in place (it stays compiled for later calls).

    Args:
        result: filled in place if given, so a caller still has the timings when the callback raises.

    Returns:
        The trained generator and a TrainResult.
    """
    steps, batch_size = trainer.steps, trainer.batch_size
    eval_every = trainer.eval_every or steps
    if steps < 1 or batch_size < 1 or eval_every < 1:
        raise ConfigValueError("trainer.steps, trainer.batch_size and trainer.eval_every must be >= 1")
    device = task.device
    bf16 = precision_used(trainer, device) == "bf16"
    seed = trainer.seed

    torch.manual_seed(seed)  # generator init
    if model is None:
        model = task.build_generator()
    channels_last = _channels_last(trainer.channels_last, device, bf16)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    loss_fn.to(device)
    if loss_fn.extractor is not None:
        # The loss network runs channels_last unless switched off (it is faster on CPU too).
        loss_fn.extractor.use_memory_format(
            torch.contiguous_format if trainer.channels_last is False else torch.channels_last
        )
    generator = model
    if trainer.compile:
        # Compiled copies share the parameters; the loss network is compiled in place (its forward only).
        generator = torch.compile(model)
        if loss_fn.extractor is not None:
            loss_fn.extractor.compile()
    task.setup_loss(loss_fn)
    task.precision = "bf16" if bf16 else "fp32"  # evaluations and previews run the generator as training does
    optimizer = torch.optim.Adam(model.parameters(), lr=trainer.lr)
    batches = torch.Generator().manual_seed(seed)

    result = result if result is not None else TrainResult(metrics={})
    check_every = _check_every(trainer.check_every, device, eval_every)
    # Loss terms are summed on the device and read back only at evaluations; the first non-finite step is
    # remembered on the device too (0 = none yet) and read every ``check_every`` steps: on a GPU a
    # ``.item()`` per step would make the host wait for every step to finish.
    term_sums: dict[str, torch.Tensor] = {}
    terms_seen = 0
    first_bad = torch.zeros((), dtype=torch.long, device=device)
    # In a log file (not a terminal): a line every LAYERSEARCH_PROGRESS_EVERY_S seconds, none for short runs.
    bar = progress(steps, "train", "step", leave=False, disable=not trainer.progress)
    started = time.perf_counter()
    try:
        for step in range(1, steps + 1):
            inputs, targets = task.sample_batch(batch_size, batches)
            if channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                # The loss network runs under autocast too; Gram and criterion compute in fp32 inside.
                loss = task.loss(loss_fn, generator(inputs), targets)
            bad = ~torch.isfinite(loss.detach())
            first_bad = torch.where(bad & (first_bad == 0), step, first_bad)
            if step % check_every == 0 or step % eval_every == 0 or step == steps:
                _raise_if_non_finite(int(first_bad), loss_fn)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for k, v in loss_fn.last_terms.items():
                term_sums[k] = term_sums[k] + v if k in term_sums else v.float()
            terms_seen += 1
            bar.update(1)

            if step % eval_every == 0 or step == steps:
                t_eval = time.perf_counter()
                scores = task.evaluate(model)
                result.eval_seconds += time.perf_counter() - t_eval
                means = torch.stack(list(term_sums.values())).div(terms_seen).tolist() if term_sums else []
                scores.update({f"train/{k}": v for k, v in zip(term_sums, means, strict=True)})
                term_sums, terms_seen = {}, 0
                result.metrics, result.steps = scores, step
                result.per_image = dict(task.last_per_image)
                result.history.append((step, dict(scores)))
                bar.set_postfix({k: f"{v:.3g}" for k, v in scores.items() if k in task.reported or k == "train/total"})
                if callback is not None:
                    t_callback = time.perf_counter()
                    try:
                        callback(step, dict(scores))
                    finally:
                        result.callback_seconds += time.perf_counter() - t_callback
    finally:
        bar.close()
        result.train_seconds = time.perf_counter() - started - result.eval_seconds - result.callback_seconds
    return model, result


# --- `layersearch train`: one run from the composed config, written to an output folder -------------


def layer_config(settings: Settings) -> LossConfig:
    """The layer config a run trains with: ``loss_file`` if given, else the ``loss`` and ``loss_net`` groups."""
    if settings.loss_file:
        return LossConfig.load(settings.loss_file)
    return LossConfig.from_mapping({"loss_net": settings_to_dict(settings.loss_net), **settings_to_dict(settings.loss)})


def weights_labels(loss_config: LossConfig, task: Task) -> dict[str, str]:
    """Which weights made these numbers; written next to every result."""
    uses_net = bool(loss_config.layers)
    return {
        "loss_net": f"{loss_config.arch}/{weights_label(loss_config.weights)}" if uses_net else "none",
        "lpips": f"{task.lpips.net}/{task.lpips.weights_label}" if task.lpips is not None else "not used",
    }


@dataclass
class TrainOutcome:
    out_dir: Path
    metrics: dict[str, float]
    baseline: dict[str, float] | None
    labels: dict[str, str]
    random_weights: bool
    precision: str  # bf16 or fp32: what trainer.precision resolved to here


def train_from_config(settings: Settings) -> TrainOutcome:
    """Build task, loss and trainer from ``settings``, train, and write the output folder.

    The folder gets ``metrics.json`` (final and per-evaluation scores, the baseline, the weights used),
    ``preview.png`` and ``config.yaml`` (the layer config trained with). It is written under a temporary
    name and renamed at the end, so a failed run leaves nothing half-written.
    """
    out_dir = Path(settings.out_dir or timestamped_dir(settings.paths.outputs_dir, "train"))
    if out_dir.exists() and any(out_dir.iterdir()):
        raise OutputExistsError(f"out_dir {out_dir} exists and is not empty; choose another out_dir=...")
    loss_config = layer_config(settings)
    device = resolve_device(settings.trainer.device)
    task = build_task(settings.task, settings.data, settings.model, settings.metrics, device,
                      settings.study.objectives)
    loss_fn = PerceptualLoss(loss_config, seed=settings.seed)
    labels = weights_labels(loss_config, task)
    random_weights = any_random(loss_config.weights if loss_config.layers else None,
                                task.lpips.weights if task.lpips is not None else None)
    precision = precision_used(settings.trainer, device)
    model, result = train(task, loss_fn, settings.trainer)
    baseline = task.baseline()

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        staging.chmod(default_mode(directory=True))
        caption = f"loss net {labels['loss_net']}, LPIPS {labels['lpips']}"
        if random_weights:
            caption = f"{RANDOM_BANNER}\n{caption}"
        titles, rows = task.preview(model, settings.trainer.preview_images)
        save_grid(staging / "preview.png", titles, rows, caption)
        atomic_write_json(staging / "metrics.json", {
            "task": task.name,
            "metrics": result.metrics,
            "baseline": baseline,
            "history": [{"step": s, **m} for s, m in result.history],
            "weights": labels,
            "loss_net": loss_fn.extractor.network.provenance(loss_config.weights) if loss_fn.extractor else None,
            "random_weights": random_weights,
            "precision": precision,
            "steps": result.steps,
            "seconds": {"train": result.train_seconds, "eval": result.eval_seconds},
        })
        atomic_write_text(staging / "config.yaml", yaml.safe_dump(loss_config.to_dict(), sort_keys=False))
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return TrainOutcome(out_dir, result.metrics, baseline, labels, random_weights, precision)
