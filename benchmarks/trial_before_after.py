"""One quickstart relu2_2 trial, timed at two git revisions of this repository, interleaved in one run.

    .venv/bin/python benchmarks/trial_before_after.py [--before a564431] [--after HEAD] [--repeats 3]

Each revision is exported with ``git archive`` into a temporary folder and imported from there (PYTHONPATH)
by a fresh Python process that builds the quickstart SR task once, then runs what a sweep's trial runs
(``PerceptualLoss`` from the layer config + ``train``: 200 steps and 4 evaluations) twice and prints both
times; the second is a sweep's steady state (per-process caches warm). Revisions alternate (before, after,
before, after, ...) so machine load hits both alike; the medians and their ratio are printed. ``--after
WORKTREE`` times the working tree as it is. Random weights (timing only); CPU unless ``--device``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Uses only API that both revisions share (build_task, layer_config, PerceptualLoss, train).
TRIAL = r"""
import json, sys, time, warnings
import torch
warnings.simplefilter("ignore")
from layersearch.config import load_settings
from layersearch.lossnet.loss import PerceptualLoss
from layersearch.trial.tasks import build_task
from layersearch.trial.train import layer_config, resolve_device, train
# eval_every=50 pinned: the quickstart preset now evaluates every 25 steps (for pruning), and both sides must do
# the same work (200 steps, 4 evaluations).
cfg = load_settings(["preset=quickstart", "trainer.eval_every=50", "loss=johnson_sr", "loss_net.weights=random",
                     "metrics.lpips.weights=random", "trainer.progress=false",
                     f"trainer.device={sys.argv[1]}", *sys.argv[2:]])
device = resolve_device(cfg.trainer.device)
task = build_task(cfg.task, cfg.data, cfg.model, cfg.metrics, device)
seconds = []
for _ in range(2):
    start = time.perf_counter()
    _, result = train(task, PerceptualLoss(layer_config(cfg)), cfg.trainer)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds.append(time.perf_counter() - start)
print(json.dumps({"first": seconds[0], "second": seconds[1], "lpips": result.metrics["lpips"]}))
"""


def export(revision: str, into: Path) -> Path:
    """The tree of ``revision`` (or the working tree for WORKTREE) as a folder to import from."""
    if revision == "WORKTREE":
        return ROOT
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", revision], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def run(tree: Path, device: str, overrides: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, "-c", TRIAL, device, *overrides], cwd=tree, env=env,
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"trial at {tree} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", default="a564431")
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both, e.g. trainer.steps=50")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        trees = {name: export(rev, Path(tmp) / name) for name, rev in (("before", args.before), ("after", args.after))}
        results: dict[str, list[dict]] = {"before": [], "after": []}
        for r in range(args.repeats):
            for name, tree in trees.items():
                results[name].append(run(tree, args.device, args.overrides))
                print(f"repeat {r + 1} {name}: {json.dumps(results[name][-1])}", flush=True)
    size = " ".join(args.overrides) or "200 steps, 4 evaluations"
    print(f"\nquickstart relu2_2 trial ({size}), {args.device}, random weights, "
          f"{args.repeats} interleaved repeats, load average {load:.2f} -> {os.getloadavg()[0]:.2f}")
    print(f"before = {args.before}, after = {args.after}")
    for key, what in (("second", "trial in a running sweep (2nd in its process)"), ("first", "first trial of a process")):
        before = statistics.median(r[key] for r in results["before"])
        after = statistics.median(r[key] for r in results["after"])
        print(f"{what:<48} before {before:7.2f} s  after {after:7.2f} s  speed-up {before / after:.2f}x")


if __name__ == "__main__":
    main()
