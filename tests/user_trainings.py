"""Trainings of a "user", for the tests of `trial=python`: no real training, known answers in milliseconds.

On the test path via pytest's ``pythonpath``, so ``trial.fn=user_trainings:<name>`` imports them.
"""

from __future__ import annotations

import json
import os
import time


def _record(t) -> None:
    calls = os.environ.get("USER_TRAININGS_LOG")  # read per call: each test names its own file
    if calls:
        with open(calls, "a") as handle:
            handle.write(json.dumps({"number": t.number, "steps": t.steps, "seed": t.seed, "device": str(t.device),
                                     "layers": sorted(t.layer_config["content_layers"]), "dir": str(t.dir)}) + "\n")


def score_of(t) -> float:
    """A made-up loss quality: deeper layers and more of them score worse (lower is better)."""
    depth = sum(int(name[4]) for name in t.layer_config["content_layers"])
    return 0.1 + 0.01 * depth + 0.001 * t.seed


def steady(t) -> dict[str, float]:
    """Reports ``quality`` every 2 steps, converging to its final value; writes a file into ``t.dir``."""
    _record(t)
    final = score_of(t)
    for step in range(2, t.steps + 1, 2):
        t.report(step, quality=final * (1 + 1 / step), train_loss=1 / step)
    t.dir.mkdir(parents=True, exist_ok=True)
    (t.dir / "notes.txt").write_text(f"trial {t.number}\n")
    return {"quality": final, "psnr_y": 30 - 10 * final}


def nan_metric(t):
    t.report(1, quality=0.5)
    t.report(2, quality=float("nan"))
    return {"quality": 0.5}


def backwards(t):
    t.report(4, quality=0.5)
    t.report(2, quality=0.4)
    return {"quality": 0.4}


def missing_objective(t):
    return {"psnr_y": 30.0}


def returns_none(t):
    return None


def boom(t):
    raise ValueError("boom in the user's code")


def cleans_up_when_pruned(t):
    """Catches Pruned, cleans up, returns: the trial is still recorded as pruned."""
    import layersearch

    final = score_of(t)
    try:
        for step in range(1, t.steps + 1):
            t.report(step, quality=final)
    except layersearch.Pruned:
        (t.dir).mkdir(parents=True, exist_ok=True)
        (t.dir / "cleaned").write_text("yes")
        return {}
    return {"quality": final}


def two_args(t, other):
    return {}


NOT_CALLABLE = 3


def waits_for_file(t):
    """Reports once, writes ``<trial dir>/started`` (its process id), then blocks until the file named by
    ``USER_TRAININGS_GO`` (else ``<trial dir>/go``) exists: a trial that is mid-run for as long as a test needs,
    with no guess of how long that is."""
    t.report(1, quality=score_of(t))
    t.dir.mkdir(parents=True, exist_ok=True)
    (t.dir / "started.tmp").write_text(str(os.getpid()))
    os.replace(t.dir / "started.tmp", t.dir / "started")
    go = os.environ.get("USER_TRAININGS_GO") or str(t.dir / "go")
    while not os.path.exists(go):
        time.sleep(0.05)
    return {"quality": score_of(t)}


def sees_devices(t) -> dict[str, float]:
    """Records what the worker sees (tests/trial/test_cuda.py: worker pinning on a real GPU)."""
    import torch

    with open(os.environ["USER_TRAININGS_LOG"], "a") as handle:
        handle.write(json.dumps({"pid": os.getpid(), "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                                 "count": torch.cuda.device_count(), "device": str(t.device),
                                 "share": os.environ.get("LAYERSEARCH_TRIALS_PER_DEVICE"),
                                 "omp": os.environ.get("OMP_NUM_THREADS")}) + "\n")
    t.report(1, quality=score_of(t))
    return {"quality": score_of(t)}
