"""The tabular benchmark of a real layer space: every config of a discrete SR x4 space on EfficientNet-Lite0's real
ImageNet features, trained with several seeds at the quickstart's budget, every evaluation kept.

    .venv/bin/python benchmarks/search/make_table.py [--seeds 3] [--workers 2] [--out benchmarks/search/table-sr-lite0.jsonl]

The space is ``search_space=sr_lite0`` made discrete and smaller to fit about an hour on 2 cores:

- layers: its 5 stage outputs ``blocks.0, .2, .4, .10, .15`` (strides 2 to 32), subsets of 1 or 2 (the real space
  allows 3: 80 three-layer configs x 3 seeds would double the time);
- each chosen layer's weight at 2 levels, 0.3 and 3 (the geometric middles of the two decades of the real space's
  log-uniform [0.1, 10]; `replay.py` snaps a sampled weight to the level of its decade);
- the pixel term (MSE) weight 0 or 1, and the pixel loss alone: 2 x (5 x 2 + 10 x 4) + 1 = 101 configs.

Each config is trained by ``layersearch.trial.train.train`` with ``preset=offline``'s settings (200 Adam steps, 64 px
crops, evaluation every 25 steps on the 128 px centre crops of ``chelsea`` and ``coffee``, HaarPSI, PSNR-Y and
SSIM-Y), once per trainer seed 0..N-1: the same seeds for every config, so the same crops (common random numbers).
Every evaluation's mean scores and the last evaluation's per-image scores are kept.

One JSON object per line: a ``meta`` line first, then one ``run`` line per (config, seed) as it finishes, so a
stopped run resumes where it was (runs already in the file are skipped) and nothing finished is lost; a ``done``
line with the total time closes the file. Runs go seed by seed, so a cut-short file has whole seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import multiprocessing as mp
import platform
import sys
import time
from pathlib import Path

LAYERS = ["blocks.0", "blocks.2", "blocks.4", "blocks.10", "blocks.15"]  # conf/search_space/sr_lite0.yaml
WEIGHT_LEVELS = [0.3, 3.0]
PIXEL_LEVELS = [0.0, 1.0]
MAX_LAYERS = 2
OVERRIDES = ["preset=offline", "trainer.progress=false", "metrics.names=[haarpsi,psnr_y,ssim_y]"]
DEFAULT_OUT = Path(__file__).with_name("table-sr-lite0.jsonl")


def config_key(layers: dict[str, float], pixel: float) -> str:
    """A config's name in the table: ``blocks.2@0.3+blocks.10@3+pixel`` (``pixel`` alone for the pixel loss)."""
    parts = [f"{name}@{weight:g}" for name, weight in layers.items()]
    return "+".join(parts + (["pixel"] if pixel else []))


def space_configs() -> dict[str, tuple[dict[str, float], float]]:
    """Every config of the discrete space: ``{key: (layers in network order, pixel weight)}``."""
    out: dict[str, tuple[dict[str, float], float]] = {"pixel": ({}, 1.0)}
    for pixel in PIXEL_LEVELS:
        for k in range(1, MAX_LAYERS + 1):
            for names in itertools.combinations(LAYERS, k):
                for weights in itertools.product(WEIGHT_LEVELS, repeat=k):
                    layers = dict(zip(names, weights, strict=True))
                    out[config_key(layers, pixel)] = (layers, pixel)
    return out


def layer_mapping(layers: dict[str, float], pixel: float) -> dict:
    return {"loss_net": {"arch": "efficientnet_lite0", "weights": "imagenet"}, "content_layers": layers,
            "style_layers": {}, "content_weight": 1.0 if layers else 0.0, "style_weight": 0.0,
            "pixel_weight": pixel, "tv_weight": 0.0, "criterion": "mse"}


_TASK = None


def _worker_init() -> None:
    global _TASK
    import torch

    torch.set_num_threads(1)  # one core per worker process: two processes use 2 cores better than one with two threads
    from layersearch.config import load_settings
    from layersearch.trial.tasks import build_task

    settings = load_settings(OVERRIDES)
    _TASK = (settings, build_task(settings.task, settings.data, settings.model, settings.metrics, "cpu",
                                  settings.study.objectives))


def _train_one(job: tuple[str, dict, float, int]) -> dict:
    from layersearch.lossnet.loss import LossConfig, PerceptualLoss
    from layersearch.trial.train import train

    key, layers, pixel, seed = job
    settings, task = _TASK
    loss = PerceptualLoss(LossConfig.from_mapping(layer_mapping(layers, pixel)), seed=settings.seed)
    started = time.perf_counter()
    _, result = train(task, loss, dataclasses.replace(settings.trainer, seed=seed))
    return {"kind": "run", "config": key, "layers": layers, "pixel_weight": pixel, "seed": seed,
            "history": [[step, {m: v for m, v in scores.items() if not m.startswith("train/")}]
                        for step, scores in result.history],
            "per_image": result.per_image, "images": list(task.val_names),
            "seconds": round(time.perf_counter() - started, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    configs = space_configs()
    done: set[tuple[str, int]] = set()
    if args.out.exists():
        for line in args.out.read_text().splitlines():
            row = json.loads(line)
            if row["kind"] == "run":
                done.add((row["config"], row["seed"]))
            if row["kind"] == "done":
                print(f"{args.out} is complete; delete it to remake it", file=sys.stderr)
                return 0
    else:
        meta = {"kind": "meta", "command": "python " + " ".join(sys.argv), "overrides": OVERRIDES,
                "layers": LAYERS, "weight_levels": WEIGHT_LEVELS, "pixel_levels": PIXEL_LEVELS,
                "max_layers": MAX_LAYERS, "seeds": args.seeds, "configs": len(configs),
                "machine": f"{platform.machine()}, {mp.cpu_count()} cores", "workers": args.workers,
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        args.out.write_text(json.dumps(meta) + "\n")
    jobs = [(key, layers, pixel, seed) for seed in range(args.seeds) for key, (layers, pixel) in configs.items()
            if (key, seed) not in done]
    total = len(configs) * args.seeds
    print(f"{len(configs)} configs x {args.seeds} seeds = {total} runs, {len(done)} already in {args.out}", flush=True)
    started = time.perf_counter()
    with mp.get_context("spawn").Pool(args.workers, initializer=_worker_init) as pool, args.out.open("a") as out:
        for k, row in enumerate(pool.imap_unordered(_train_one, jobs), start=len(done) + 1):
            out.write(json.dumps(row) + "\n")
            out.flush()
            last = row["history"][-1][1]
            print(f"[{k}/{total}] {row['config']} seed {row['seed']}: haarpsi {last['haarpsi']:.4f} "
                  f"psnr_y {last['psnr_y']:.2f} ({row['seconds']:.0f} s; {time.perf_counter() - started:.0f} s so far)",
                  flush=True)
        out.write(json.dumps({"kind": "done", "seconds_this_session": round(time.perf_counter() - started),
                              "finished": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
