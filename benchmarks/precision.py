"""Does bf16 autocast on the CPU rank losses as fp32 does, and how much faster is it? One run, both sides.

    .venv/bin/python benchmarks/precision.py [--seeds 3] [overrides ...]

`trainer.precision=auto` trains in bf16 on CPUs with bf16 units (AVX512-BF16, AMX), as on CUDA. This trains
the quickstart SR generator with four losses (pixel, relu2_2, relu4_3, relu1_2+relu2_2+pixel) in fp32
(NCHW generator) and in bf16 (channels_last generator: what ``auto`` picks for each), for each seed,
interleaved, and prints per loss the mean validation scores of each precision, their difference next to
the spread over seeds, whether both rank the losses alike, and the time ratio. Scoring is fp32 for both.
RANDOM weights for the loss network and LPIPS: PSNR-Y and SSIM-Y mean what they say, LPIPS is only a
consistency check.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
import warnings

import torch

from layersearch.config import load_settings
from layersearch.lossnet.loss import LossConfig, PerceptualLoss
from layersearch.lossnet.weights import RandomWeightsWarning
from layersearch.trial.tasks import build_task
from layersearch.trial.train import cpu_has_native_bf16, train

LOSSES = {
    "pixel": {"content_layers": {}, "pixel_weight": 1.0},
    "relu2_2": {"content_layers": {"relu2_2": 1.0}},
    "relu4_3": {"content_layers": {"relu4_3": 1.0}},
    "relu1_2+relu2_2+pixel": {"content_layers": {"relu1_2": 1.0, "relu2_2": 1.0}, "pixel_weight": 1.0},
}
PRECISIONS = {"fp32": {"precision": "fp32", "channels_last": "auto"}, "bf16": {"precision": "bf16", "channels_last": True}}
METRICS = ("psnr_y", "ssim_y", "lpips")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. trainer.steps=20")
    args = parser.parse_args()
    warnings.simplefilter("ignore", RandomWeightsWarning)
    cfg = load_settings(["preset=quickstart", "loss_net.weights=random", "metrics.lpips.weights=random",
                         "trainer.progress=false", "trainer.device=cpu", *args.overrides])
    task = build_task(cfg.task, cfg.data, cfg.model, cfg.metrics, torch.device("cpu"))
    load = os.getloadavg()[0]
    runs: dict[tuple[str, str], list[dict]] = {}
    for seed in range(args.seeds):
        for loss, layers in LOSSES.items():
            for precision, trainer in PRECISIONS.items():
                loss_fn = PerceptualLoss(LossConfig.from_mapping({"loss_net": {"arch": "vgg16", "weights": "random"},
                                                                  **layers}))
                start = time.perf_counter()
                _, result = train(task, loss_fn, dataclasses.replace(cfg.trainer, **trainer, seed=seed))
                row = {**{m: result.metrics[m] for m in METRICS}, "seconds": time.perf_counter() - start}
                runs.setdefault((loss, precision), []).append(row)
                print(f"seed {seed} {loss:<22} {precision}: " + "  ".join(f"{k}={v:.4f}" for k, v in row.items()),
                      flush=True)

    def mean(loss: str, precision: str, key: str) -> float:
        return statistics.mean(r[key] for r in runs[(loss, precision)])

    print(f"\nquickstart SR ({cfg.trainer.steps} steps, batch {cfg.trainer.batch_size}, "
          f"{cfg.task.params['crop']} px), {args.seeds} seeds, cpu, RANDOM weights; this CPU has bf16 units: "
          f"{cpu_has_native_bf16()}; load average {load:.2f} -> {os.getloadavg()[0]:.2f}")
    print(f"{'loss':<22} {'psnr_y fp32':>11} {'bf16':>8} {'diff':>7} {'seed sd':>8} "
          f"{'ssim_y fp32':>11} {'bf16':>7} {'lpips fp32':>10} {'bf16':>7} {'speed-up':>8}")
    for loss in LOSSES:
        spread = statistics.stdev(r["psnr_y"] for r in runs[(loss, "fp32")]) if args.seeds > 1 else float("nan")
        fp32, bf16 = mean(loss, "fp32", "psnr_y"), mean(loss, "bf16", "psnr_y")
        print(f"{loss:<22} {fp32:>11.3f} {bf16:>8.3f} {bf16 - fp32:>+7.3f} {spread:>8.3f} "
              f"{mean(loss, 'fp32', 'ssim_y'):>11.4f} {mean(loss, 'bf16', 'ssim_y'):>7.4f} "
              f"{mean(loss, 'fp32', 'lpips'):>10.4f} {mean(loss, 'bf16', 'lpips'):>7.4f} "
              f"{mean(loss, 'fp32', 'seconds') / mean(loss, 'bf16', 'seconds'):>7.2f}x")
    for metric, sign in (("psnr_y", -1), ("lpips", 1)):
        order = {p: sorted(LOSSES, key=lambda loss, p=p: sign * mean(loss, p, metric)) for p in PRECISIONS}
        same = "same" if order["fp32"] == order["bf16"] else "DIFFERENT"
        print(f"ranking by mean {metric}: fp32 {' > '.join(order['fp32'])}; bf16 {' > '.join(order['bf16'])} ({same})")
        # A swap between two losses matters only if they are told apart at all: compare their gap with the
        # spread of a single run over seeds.
        for i, a in enumerate(order["fp32"]):
            for b in order["fp32"][i + 1:]:
                if order["bf16"].index(a) > order["bf16"].index(b):
                    gaps = {p: abs(mean(a, p, metric) - mean(b, p, metric)) for p in PRECISIONS}
                    spread = max(statistics.stdev(r[metric] for r in runs[(loss, p)])
                                 for loss in (a, b) for p in PRECISIONS) if args.seeds > 1 else float("nan")
                    print(f"  swapped: {a} / {b}: gap fp32 {gaps['fp32']:.4g}, bf16 {gaps['bf16']:.4g}; largest "
                          f"seed sd of the two {spread:.4g} ({'within' if max(gaps.values()) < spread else 'beyond'} "
                          "seed noise)")


if __name__ == "__main__":
    main()
