"""Scale-out measurements: a 12-trial smoke study with 1 vs N workers, and the heartbeat thread's overhead.

    .venv/bin/python benchmarks/workers.py [--trials 12] [--workers 3] [--repeats 2] [--skip-sweeps]
        [--hb-repeats 5] [--hb-steps 20]

Sweeps: `layersearch sweep preset=smoke` in fresh folders, 1 worker and N workers interleaved (1, N, 1, N)
so machine load hits both alike; wall time of the whole command (start-up included) and the ratio.
Heartbeat: in one process, the same quickstart-sized trial (`train`) timed without a heartbeat thread, with
the default `study.heartbeat_s=30`, and with a 0.05 s beat (600x more often, a stress case), interleaved;
median seconds and the ratio to no thread. Weights are random: timing does not depend on them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna

from layersearch.config import load_settings
from layersearch.lossnet.loss import LossConfig, PerceptualLoss
from layersearch.search.storage import heartbeat_thread, open_storage
from layersearch.trial.tasks import build_task
from layersearch.trial.train import resolve_device, train


def time_sweep(workers: int, trials: int) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        done = subprocess.run(
            [str(Path(sys.executable).parent / "layersearch"), "sweep", "preset=smoke", "study.name=bench",
             f"study.n_trials={trials}", f"study.workers={workers}", "search_space.baselines=[]"],
            cwd=tmp, capture_output=True, text=True, timeout=1800, env={**os.environ, "TQDM_DISABLE": "1"})
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(done.stderr[-2000:])
        summary = next(line for line in done.stdout.splitlines() if line.startswith("study bench:"))
        return seconds, summary


def heartbeat_overhead(repeats: int, steps: int) -> dict[str, list[float]]:
    warnings.simplefilter("ignore")
    cfg = load_settings(["preset=quickstart", "loss_net.weights=random", "metrics.lpips.weights=random",
                         f"trainer.steps={steps}", f"trainer.eval_every={steps // 2}", "trainer.progress=false"])
    device = resolve_device("cpu")
    task = build_task(cfg.task, cfg.data, cfg.model, cfg.metrics, device)
    loss = LossConfig.from_mapping({"loss_net": {"arch": "vgg16", "weights": "random"},
                                    "content_layers": {"relu2_2": 1.0}})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tmp = tempfile.mkdtemp()
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp}/hb.db", heartbeat_s=cfg.study.heartbeat_s,
                                                     grace_s=cfg.study.grace_s, retry_s=cfg.study.db_retry_s))
    cases = {"no heartbeat thread": None, "heartbeat_s=30 (default)": 30.0, "heartbeat_s=0.05 (stress)": 0.05}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for name, every in cases.items():
            trial = study.ask()
            beat = heartbeat_thread(study, trial, every) if every else contextlib.nullcontext()
            start = time.perf_counter()
            with beat:
                train(task, PerceptualLoss(loss, seed=0), cfg.trainer)
            times[name].append(time.perf_counter() - start)
            study.tell(trial, 0.0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--hb-repeats", type=int, default=5)
    parser.add_argument("--hb-steps", type=int, default=20)
    parser.add_argument("--skip-sweeps", action="store_true")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; random weights")
    if not args.skip_sweeps:
        walls: dict[int, list[float]] = {1: [], args.workers: []}
        for _ in range(args.repeats):
            for w in walls:
                seconds, summary = time_sweep(w, args.trials)
                walls[w].append(seconds)
                print(f"  workers={w}: {seconds:.1f} s  ({summary})", flush=True)
        one, many = statistics.median(walls[1]), statistics.median(walls[args.workers])
        print(f"{args.trials}-trial smoke study: 1 worker {one:.1f} s, {args.workers} workers {many:.1f} s "
              f"(median of {args.repeats}); speed-up {one / many:.2f}x")
    times = heartbeat_overhead(args.hb_repeats, args.hb_steps)
    ref = statistics.median(times["no heartbeat thread"])
    for name, values in times.items():
        med = statistics.median(values)
        print(f"heartbeat: {name:<28} {med:.3f} s per trial (median of {len(values)}), ratio {med / ref:.3f}")


if __name__ == "__main__":
    main()
