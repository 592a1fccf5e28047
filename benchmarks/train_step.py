"""Seconds per training step of `layersearch train` for trainer variants, measured in one process.

    .venv/bin/python benchmarks/train_step.py --steps 50 [--variant NAME ...] [overrides ...]

Each variant is a set of ``trainer.*`` overrides (precision, channels_last, compile). A variant's step time
is ``(time of W+N steps - time of W steps) / N`` over two runs of ``train``, so start-up and compilation,
paid in both, cancel. Evaluation is skipped (timed by `make bench`). Variants run interleaved, twice, and
the median is printed next to the ratio to the first variant. A variant that fails (torch.compile without a
working compiler, say) gets one line saying why, and the others go on. `benchmarks/gpu.sh` runs it on a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
import warnings

import torch

from layersearch.config import load_settings
from layersearch.lossnet.loss import PerceptualLoss
from layersearch.lossnet.weights import RandomWeightsWarning
from layersearch.trial.tasks import build_task
from layersearch.trial.train import layer_config, resolve_device, train

VARIANTS = {
    "fp32": {"precision": "fp32", "channels_last": False, "compile": False},
    "bf16": {"precision": "bf16", "channels_last": False, "compile": False},
    "bf16 + channels_last": {"precision": "bf16", "channels_last": True, "compile": False},
    "bf16 + channels_last + compile": {"precision": "bf16", "channels_last": True, "compile": True},
    "fp32 + channels_last": {"precision": "fp32", "channels_last": True, "compile": False},
    "fp32 + channels_last + compile": {"precision": "fp32", "channels_last": True, "compile": True},
}


def run_seconds(task, cfg, trainer, steps: int) -> float:
    loss_fn = PerceptualLoss(layer_config(cfg))
    device = task.device
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    train(task, loss_fn, dataclasses.replace(trainer, steps=steps, eval_every=steps))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50, help="timed steps N")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up steps W")
    parser.add_argument("--variant", action="append", choices=list(VARIANTS), help="default: all")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. preset=gpu")
    args = parser.parse_args()
    warnings.simplefilter("ignore", RandomWeightsWarning)
    cfg = load_settings(["loss_net.weights=random", "metrics.lpips.weights=random", "trainer.progress=false",
                         *args.overrides])
    device = resolve_device(cfg.trainer.device)
    task = build_task(cfg.task, cfg.data, cfg.model, cfg.metrics, device)
    task.evaluate = lambda model: {}  # steps only
    names = args.variant or list(VARIANTS)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    failed: dict[str, str] = {}
    for _ in range(2):
        for name in names:
            if name in failed:
                continue
            trainer = dataclasses.replace(cfg.trainer, **VARIANTS[name])
            try:
                short = run_seconds(task, cfg, trainer, args.warmup)
                long = run_seconds(task, cfg, trainer, args.warmup + args.steps)
            except Exception as err:  # a variant's failure is a result too (Inductor cannot build here, say)
                failed[name] = f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
                continue
            seconds[name].append(max(long - short, 0.0) / args.steps)
    print(f"step time, {device}, batch {cfg.trainer.batch_size}, crop {cfg.task.params['crop']} px, "
          f"loss {list(layer_config(cfg).layers) or 'pixel'}, RANDOM weights, median of 2 interleaved runs")
    print(f"{'variant':<34} {'ms/step':>9} {'vs ' + names[0]:>12}")
    first = statistics.median(seconds[names[0]]) if seconds[names[0]] else 0.0
    for name in names:
        if name in failed:
            print(f"{name:<34} {'failed':>9} {'n/a':>12}  {failed[name]}")
            continue
        median = statistics.median(seconds[name])
        ratio = f"{first / median:.2f}x" if median > 0 and first > 0 else "n/a"  # a noisy toy run can time 0
        print(f"{name:<34} {1000 * median:>9.2f} {ratio:>12}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
