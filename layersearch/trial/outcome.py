"""One training run behind the `Trial` handle, and how it ended: the one place that reads outcomes.

The sweep (search/loop/runner.py) and confirm (insight/confirm/job.py) both call `run_training`, then record the
`Outcome` their own way (an Optuna trial, a confirm job). Whatever the kind of training, the same rules
decide its state:

- returned a mapping holding every objective as a finite number: COMPLETE;
- the pruner stopped it (``layersearch.Pruned`` raised, or returned after the pruner's decision): PRUNED;
- failed by itself (a NaN metric or loss, a missing objective, a command's non-zero exit or timeout), or
  ran out of memory: FAIL with a reason, and the sweep goes on;
- raised any other exception: in the user's code, FAIL with its type and message (traceback saved in the
  trial folder) and the sweep goes on; in layersearch's own training, FAIL and the bug is re-raised.
"""

from __future__ import annotations

import gc
import math
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch

from .handle import Trial, TrialFailed, metric_value
from .train import NonFiniteLossError

__all__ = ["Outcome", "final_values", "free_memory", "is_out_of_memory", "per_image_values", "run_training"]

# Allocation failures that are a trial's size, not a bug. The CUDA caching allocator raises
# torch.cuda.OutOfMemoryError (torch >= 1.13; torch.OutOfMemoryError, new in 2.5, is the same class, so one
# isinstance covers both on every torch that pyproject allows). cuBLAS, cuDNN and CUDA calls outside the
# allocator report theirs as a RuntimeError (torch.AcceleratorError in newer torch) naming their status.
_OOM_TEXT = ("CUDA out of memory", "CUDA error: out of memory", "CUBLAS_STATUS_ALLOC_FAILED",
             "CUDNN_STATUS_ALLOC_FAILED", "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE", "HIP out of memory",
             "MPS backend out of memory", "XPU out of memory", "DefaultCPUAllocator: can't allocate memory")


def is_out_of_memory(err: BaseException) -> bool:
    """An allocation failure on the device (or the host): the trial was too big, nothing is broken."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and any(text in str(err) for text in _OOM_TEXT)


def free_memory() -> None:
    """Give back what a failed trial held (CUDA's cache included), so the next trial can start."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class Outcome:
    """How one training ended: ``state`` COMPLETE, PRUNED or FAIL; ``values`` every final metric (COMPLETE)."""

    state: str
    values: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    seconds: float = 0.0  # wall time of the training, time spent reporting (tracking, pruning) left out
    bug: BaseException | None = None  # an error in layersearch's own training: record it, then raise it
    #: COMPLETE: the final scores per image, ``{metric: [value per image]}`` (`per_image_values`), and the
    #: images' names in that order; empty when the training recorded none.
    per_image: dict[str, list[float]] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)


def final_values(result: Any, objectives: list[str]) -> dict[str, float]:
    """The training's return value as ``{metric: finite float}`` holding every objective, else TrialFailed."""
    if not isinstance(result, Mapping):
        raise TrialFailed(f"the training returned {type(result).__name__}, not a mapping metric -> number "
                          f"holding the objectives {', '.join(objectives)}")
    values = {str(k): metric_value(str(k), v) for k, v in result.items()}
    missing = [m for m in objectives if m not in values]
    if missing:
        got = ", ".join(values) or "nothing"
        raise TrialFailed(f"the training returned no value for objective(s) {', '.join(missing)} (it returned {got})")
    return values


def per_image_values(trial: Trial, values: Mapping[str, float]) -> dict[str, list[float]]:
    """The trial's recorded per-image scores of each metric whose mean is that metric's final value.

    A user's training may have scored other images, or another checkpoint, last than the values it returned;
    per-image values that do not average to the trial's value must not stand for it in a paired comparison.
    """
    return {m: vs for m, vs in trial.per_image.items()
            if vs and m in values and math.isclose(sum(vs) / len(vs), values[m], rel_tol=1e-6, abs_tol=1e-9)}


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: " + " ".join(str(err).split())[:500]


def run_training(training: Any, trial: Trial) -> Outcome:
    """Call ``training(trial)`` and classify its end (see the module docstring); KeyboardInterrupt propagates."""
    started = time.perf_counter()
    outcome: Outcome
    out_of_memory = False
    try:
        result = training(trial)
        if trial.should_prune():
            outcome = Outcome("PRUNED", reason=trial.prune_reason)
        else:
            outcome = Outcome("COMPLETE", final_values(result, trial.objectives))
            outcome.per_image = per_image_values(trial, outcome.values)
            outcome.images = list(trial.images) if outcome.per_image else []
    except optuna.TrialPruned as err:
        outcome = Outcome("PRUNED", reason=trial.prune_reason or str(err) or "pruned")
    except (TrialFailed, NonFiniteLossError) as err:
        outcome = Outcome("PRUNED", reason=trial.prune_reason) if trial.should_prune() else Outcome("FAIL", reason=str(err))
    except Exception as err:
        if trial.should_prune():
            outcome = Outcome("PRUNED", reason=trial.prune_reason)
        elif is_out_of_memory(err):
            # Recorded here; the memory is freed below, once this frame no longer holds the traceback.
            out_of_memory = True
            outcome = Outcome("FAIL", reason="out of memory: " + " ".join(str(err).split())[:300])
        elif getattr(training, "user_code", False):
            trial.dir.mkdir(parents=True, exist_ok=True)
            (trial.dir / "traceback.txt").write_text("".join(traceback.format_exception(err)))
            outcome = Outcome("FAIL", reason=_one_line(err))
        else:
            outcome = Outcome("FAIL", reason=_one_line(err), bug=err)
    if out_of_memory:
        free_memory()
    outcome.seconds = time.perf_counter() - started - trial.report_seconds
    return outcome
