"""Seconds per training step of the quickstart SR run for several layer configs, measured in one process.

    .venv/bin/python benchmarks/step_time.py [--steps 20] [--repeats 3] [--device cpu]

The configs run interleaved (A B C, A B C, ...) so machine load hits all of them alike; the table gives the
median seconds per step and the ratio to the pixel-loss reference (no loss network), which is what a
layer choice costs on top of training the generator. Weights are random: timing does not depend on them.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from layersearch.config import compose_config, to_container
from layersearch.lossnet.loss import LossConfig, PerceptualLoss
from layersearch.lossnet.weights import RandomWeightsWarning
from layersearch.trial.tasks import build_task
from layersearch.trial.train import resolve_device, train

CONFIGS = {
    "pixel (reference)": {"content_layers": {}, "pixel_weight": 1.0},
    "relu2_2": {"content_layers": {"relu2_2": 1.0}},
    "relu5_3": {"content_layers": {"relu5_3": 1.0}},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    warnings.simplefilter("ignore", RandomWeightsWarning)
    cfg = to_container(compose_config(["preset=quickstart", "loss_net.weights=random", "metrics.lpips.weights=random"]))
    device = resolve_device(args.device)
    task = build_task(cfg["task"], cfg["data"], cfg["model"], cfg["metrics"], device)
    trainer = {**cfg["trainer"], "steps": args.steps, "eval_every": 10**9, "progress": False}
    # Evaluation runs once at the last step; time the training steps alone.
    task.evaluate = lambda model: {}
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for _ in range(args.repeats):
        for name, layers in CONFIGS.items():
            loss_fn = PerceptualLoss(LossConfig.from_mapping({"loss_net": {"arch": "vgg16", "weights": "random"},
                                                              **layers}))
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            _, result = train(task, loss_fn, trainer)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - start) / args.steps)
    ref = statistics.median(times["pixel (reference)"])
    print(f"quickstart SR x4: batch {trainer['batch_size']}, crop {cfg['task']['crop']} px, {device}, "
          f"torch threads {torch.get_num_threads()}, {args.steps} steps x {args.repeats} repeats")
    print(f"{'loss':<20} {'s/step':>8} {'x pixel':>8}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<20} {median:>8.4f} {median / ref:>8.2f}")


if __name__ == "__main__":
    main()
