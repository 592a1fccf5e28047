"""`make bench-pruning`: does median pruning pay? The same sweep twice, pruner median vs none.

    .venv/bin/python benchmarks/pruning.py [--seeds 2] [--sampler-seeds 1] [overrides ...]

Runs ``layersearch sweep preset=quickstart`` (random weights, labelled) twice with the same sampler seed,
``study.pruner=median`` and ``study.pruner=none``, in a temporary studies folder, then reads both studies
and prints the training steps each spent (a trial's last reported step: a complete trial ran all its steps,
a pruned one stopped at its last evaluation) and the best value of each objective found. Noise: the
unpruned study's best layer config is trained again with ``--seeds`` other trainer seeds; the spread of its
primary objective over the seeds says how far apart two best values may be by chance alone.
One sampler seed is one trajectory of the sampler, and the steps saved vary between trajectories:
``--sampler-seeds N`` runs the pair for ``study.seed`` = 0..N-1 and also prints the mean saving.
Extra arguments are Hydra overrides for both sweeps (e.g. ``study.n_trials=12 trainer.steps=100``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from layersearch.config import compose_config, to_container
from layersearch.lossnet.loss import LossConfig, PerceptualLoss
from layersearch.lossnet.weights import RandomWeightsWarning
from layersearch.outputs import RANDOM_BANNER
from layersearch.trial.tasks import build_task
from layersearch.trial.train import resolve_device, train

RANDOM = ["preset=quickstart", "loss_net.weights=random", "metrics.lpips.weights=random"]


def last_step(trial: optuna.trial.FrozenTrial, steps: int) -> int:
    """Training steps a trial ran: all of them if complete, else its last evaluation."""
    if trial.state == TrialState.COMPLETE:
        return steps
    reported = [int(s) for s in (trial.user_attrs.get("intermediate") or {})] + list(trial.intermediate_values)
    return max(reported, default=0)


def summary(study: optuna.Study, steps: int) -> dict:
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    directions = [d.name.lower() for d in study.directions]
    best = []
    for i, direction in enumerate(directions):
        values = [t.values[i] for t in complete]
        best.append(min(values) if direction == "minimize" else max(values))
    primary = min if directions[0] == "minimize" else max
    best_trial = primary(complete, key=lambda t: t.values[0])
    return {
        "trials": len(trials), "complete": len(complete),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "steps": sum(last_step(t, steps) for t in trials), "best": best, "best_trial": best_trial,
    }


def seed_spread(cfg: dict, layer_config: dict, seeds: int) -> list[float]:
    """The primary objective of one layer config trained with trainer seeds 0..seeds (noise of a best value)."""
    warnings.simplefilter("ignore", RandomWeightsWarning)
    device = resolve_device(cfg["trainer"]["device"])
    task = build_task(cfg["task"], cfg["data"], cfg["model"], cfg["metrics"], device)
    values = []
    for seed in range(seeds + 1):
        loss_fn = PerceptualLoss(LossConfig.from_mapping(layer_config))
        _, result = train(task, loss_fn, {**cfg["trainer"], "seed": seed, "progress": False})
        values.append(result.metrics[task.objectives[0]])
    return values


def compare(base: list[str], tmp: str, noise_seeds: int, log) -> dict:
    """Both sweeps of one sampler seed, their summaries, the saving and the noise of the best value."""
    cfg = to_container(compose_config(base))
    steps = int(cfg["trainer"]["steps"])
    studies = {}
    for pruner in ("median", "none"):
        name = f"bench_pruning_{pruner}_seed{cfg['study']['seed']}"
        command = [str(Path(sys.executable).parent / "layersearch"), "sweep", *base,
                   f"study.pruner={pruner}", f"study.name={name}"]
        log("$ " + " ".join(command[1:]))
        t0 = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        log(f"  {time.perf_counter() - t0:.0f} s")
        storage = f"sqlite:///{tmp}/{name}/optuna.db"
        studies[pruner] = summary(optuna.load_study(study_name=name, storage=storage), steps)
    spread = seed_spread(cfg, studies["none"]["best_trial"].user_attrs["layer_config"], noise_seeds)
    return {"cfg": cfg, "studies": studies, "spread": spread,
            "saved": 1 - studies["median"]["steps"] / studies["none"]["steps"],
            "gap": abs(studies["median"]["best"][0] - studies["none"]["best"][0])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=2, help="extra trainer seeds for the noise estimate")
    parser.add_argument("--sampler-seeds", type=int, default=1, help="run the pair for study.seed = 0..N-1")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        base = [*RANDOM, f"paths.studies_dir={tmp}", f"tracking.uri=sqlite:///{tmp}/mlflow.db", *args.overrides]
        results = [compare([*base, f"study.seed={seed}"] if args.sampler_seeds > 1 else base, tmp, args.seeds,
                           lambda line: print(line, flush=True))
                   for seed in range(args.sampler_seeds)]

    cfg = results[0]["cfg"]
    objectives = [m for m in cfg["study"]["objectives"] or ["lpips", "psnr_y"]]
    print()
    print(RANDOM_BANNER)
    print(f"quickstart sweep, {cfg['study']['n_trials']} trials of {cfg['trainer']['steps']} steps, evaluations every "
          f"{cfg['trainer']['eval_every']}, sampler {cfg['study']['sampler']}, n_startup_trials "
          f"{cfg['study']['n_startup_trials']}; took {time.perf_counter() - started:.0f} s")
    for r in results:
        print(f"\nsampler seed {r['cfg']['study']['seed']}")
        print(f"{'pruner':<8} {'trials':>6} {'complete':>8} {'pruned':>6} {'failed':>6} {'steps':>7} "
              + " ".join(f"{'best ' + m:>12}" for m in objectives))
        for pruner, s in r["studies"].items():
            print(f"{pruner:<8} {s['trials']:>6} {s['complete']:>8} {s['pruned']:>6} {s['failed']:>6} {s['steps']:>7} "
                  + " ".join(f"{v:>12.4f}" for v in s["best"]))
        noise = max(r["spread"]) - min(r["spread"])
        print(f"steps saved by median pruning: {100 * r['saved']:.0f}% (goal >= 40%)")
        print(f"best {objectives[0]} gap {r['gap']:.4f}; noise: the unpruned best config over {len(r['spread'])} "
              f"trainer seeds gives {', '.join(f'{v:.4f}' for v in r['spread'])} (spread {noise:.4f}): "
              f"{'within noise' if r['gap'] <= noise else 'NOT within noise'}")
    if len(results) > 1:
        saved = [r["saved"] for r in results]
        print(f"\nsteps saved over {len(results)} sampler seeds: "
              f"{', '.join(f'{100 * v:.0f}%' for v in saved)}; mean {100 * sum(saved) / len(saved):.0f}% (goal >= 40%)")


if __name__ == "__main__":
    main()
