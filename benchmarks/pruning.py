"""`make bench-pruning`: does median pruning pay, and does it keep the answer? The same sweep, pruned and not.

    .venv/bin/python benchmarks/pruning.py [--sampler-seeds 3] [--out FILE] [overrides ...]

For each sampler seed (``study.seed`` = 0..N-1) it runs ``layersearch sweep preset=quickstart`` (random
weights, labelled) twice in a temporary studies folder, ``study.pruner=none`` and ``study.pruner=median``
(with the study's default warm-up), and prints:

1. how early evaluations predict final ones, from the unpruned study: at each evaluation step, Spearman's
   rank correlation between the trials' primary objective at that step and at the end, and the warm-up
   this suggests (the first step where the mean correlation over sampler seeds reaches ``--min-rho``);
2. the training steps each study spent (a complete trial ran all its steps, a pruned one stopped at its last
   evaluation) and the best value of each objective, with the study's seed noise (the baselines' repeats);
3. whether the answer is kept: how many of the unpruned study's top 3 configs are in the pruned study's top 3
   (exactly, and as layer choices: which layers are on, whatever their weights), how many per-layer effects
   (layersearch report's joint model) have the same sign in both, and each layer's verdict (helps, hurts,
   unclear, too few trials) in the unpruned study, the pruned one, and the pruned one at an early step that
   every trial reached (the report's "at step s" table).

``--keep DIR`` keeps the studies (``DIR/<study>/optuna.db``) so other measures can be read from them later.

Extra arguments are Hydra overrides for every sweep (e.g. ``study.n_trials=12 trainer.steps=100``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import TrialState
from scipy import stats

from layersearch.config import load_settings
from layersearch.insight.effects import layer_effects, step_effects
from layersearch.insight.study_summary import intermediate, summarize_study
from layersearch.outputs import RANDOM_BANNER
from layersearch.search.loop import warmup_steps
from layersearch.search.results import describe, first_runs, noise_floor
from layersearch.trial.metric_registry import format_metric

RANDOM = ["preset=quickstart", "loss_net.weights=random", "metrics.lpips.weights=random"]


def last_step(trial: optuna.trial.FrozenTrial, steps: int) -> int:
    """Training steps a trial ran: all of them if complete, else its last evaluation."""
    if trial.state == TrialState.COMPLETE:
        return steps
    return max(intermediate(trial), default=0)


def step_correlations(study: optuna.Study) -> dict[int, tuple[float, int]]:
    """``{step: (Spearman rho, n)}``: the primary objective at each evaluation vs at the end, complete trials."""
    complete = [t for t in first_runs(study) if t.state == TrialState.COMPLETE]
    curves = [(intermediate(t), t.values[0]) for t in complete]
    out = {}
    for step in sorted({s for curve, _ in curves for s in curve}):
        pairs = [(curve[step], final) for curve, final in curves if step in curve]
        if len(pairs) >= 3:
            out[step] = (float(stats.spearmanr(*zip(*pairs, strict=True)).statistic), len(pairs))
    return out


def config_key(trial: optuna.trial.FrozenTrial) -> str:
    return json.dumps(trial.user_attrs["layer_config"], sort_keys=True)


def layer_choice(trial: optuna.trial.FrozenTrial) -> str:
    """The layers a config turns on (network, group, layer; pixel term), whatever their weights."""
    config = trial.user_attrs["layer_config"]
    arch = config["loss_net"]["arch"]
    on = sorted(f"{arch}:{group}:{layer}" for group in ("content_layers", "style_layers")
                for layer, weight in config.get(group, {}).items() if weight > 0)
    return " ".join(on + ["pixel"] * (config.get("pixel_weight", 0) > 0))


def top_trials(study: optuna.Study, k: int = 3) -> list[optuna.trial.FrozenTrial]:
    complete = [t for t in first_runs(study) if t.state == TrialState.COMPLETE]
    minimize = study.directions[0] == optuna.study.StudyDirection.MINIMIZE
    return sorted(complete, key=lambda t: t.values[0], reverse=not minimize)[:k]


def in_common(a: list[str], b: list[str]) -> int:
    """Size of the multiset intersection: how many of ``a``'s entries ``b`` also has."""
    return sum((Counter(a) & Counter(b)).values())


def effect_signs(study: optuna.Study) -> dict[str, int]:
    """``{layer: +1 | -1}`` for each candidate layer the joint model could estimate."""
    table = layer_effects(summarize_study(study))
    return {f"{e.arch}/{e.layer}": (1 if e.difference > 0 else -1) for e in table.rows if e.difference is not None}


def verdicts(study: optuna.Study) -> dict[str, str]:
    """``{layer: verdict}`` from the report's table on complete trials, and ``{layer@early: verdict}`` from its
    table at the latest step every complete and pruned trial reached (absent when no trial was pruned)."""
    summary = summarize_study(study)
    out = {f"{e.arch}/{e.layer}": e.verdict for e in layer_effects(summary).rows}
    early = step_effects(summary)
    if not isinstance(early, str):
        out.update({f"{e.arch}/{e.layer}@early": e.verdict for e in early.rows})
        out["@step"] = str(early.step)
    return out


def summary(study: optuna.Study, steps: int) -> dict:
    trials = first_runs(study)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    directions = [d.name.lower() for d in study.directions]
    names = study.user_attrs["objectives"]
    best = [(min if d == "minimize" else max)(t.values[i] for t in complete) for i, d in enumerate(directions)]
    return {"trials": len(trials), "complete": len(complete),
            "pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "failed": sum(t.state == TrialState.FAIL for t in trials),
            "steps": sum(last_step(t, steps) for t in study.get_trials(deepcopy=False)), "best": best,
            "noise": noise_floor(study.get_trials(deepcopy=False), names)}


def run_pair(base: list[str], folder: str, log) -> dict:
    """Both sweeps of one sampler seed and what the comparison needs."""
    cfg = load_settings(base)
    steps = cfg.trainer.steps
    studies = {}
    for pruner in ("none", "median"):
        name = f"bench_pruning_{pruner}_seed{cfg.study.seed}"
        command = [str(Path(sys.executable).parent / "layersearch"), "sweep", *base,
                   f"study.pruner={pruner}", f"study.name={name}"]
        log("$ " + " ".join(command[1:]))
        t0 = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log(f"  {time.perf_counter() - t0:.0f} s")
        studies[pruner] = optuna.load_study(study_name=name, storage=f"sqlite:///{folder}/{name}/optuna.db")
    signs = {p: effect_signs(s) for p, s in studies.items()}
    shared = sorted(set(signs["none"]) & set(signs["median"]))
    tops = {p: top_trials(s) for p, s in studies.items()}
    return {
        "cfg": cfg, "summaries": {p: summary(s, steps) for p, s in studies.items()},
        "rho": step_correlations(studies["none"]),
        "top3": in_common([config_key(t) for t in tops["none"]], [config_key(t) for t in tops["median"]]),
        "top3_layers": in_common([layer_choice(t) for t in tops["none"]], [layer_choice(t) for t in tops["median"]]),
        "signs": (sum(signs["none"][k] == signs["median"][k] for k in shared), len(shared)),
        "verdicts": {p: verdicts(s) for p, s in studies.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sampler-seeds", type=int, default=3, help="run the pair for study.seed = 0..N-1")
    parser.add_argument("--min-rho", type=float, default=0.7, help="correlation from which pruning may act")
    parser.add_argument("--out", type=Path, default=None, help="also write the report to this file")
    parser.add_argument("--keep", type=Path, default=None, help="keep the studies in this folder")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = str(args.keep.resolve()) if args.keep else tmp
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
        base = [*RANDOM, f"paths.studies_dir={folder}", f"tracking.uri=sqlite:///{folder}/mlflow.db", *args.overrides]
        results = [run_pair([*base, f"study.seed={seed}"], folder, lambda line: print(line, flush=True))
                   for seed in range(args.sampler_seeds)]

    cfg = results[0]["cfg"]
    names = list(cfg.study.objectives or ["lpips", "psnr_y"])
    steps, every = cfg.trainer.steps, cfg.trainer.eval_every
    say(RANDOM_BANNER)
    say(f"quickstart sweep: {cfg.study.n_trials} trials of {steps} steps, an evaluation every {every}, sampler "
        f"{cfg.study.sampler}, n_startup_trials {cfg.study.n_startup_trials}, baseline seeds "
        f"{cfg.study.baseline_seeds}; pruned with warm-up {warmup_steps(cfg.study, steps)} steps; "
        f"{len(results)} sampler seeds; took {time.perf_counter() - started:.0f} s")

    say(f"\n1. Spearman rho between {names[0]} at each evaluation and at the end (unpruned studies, complete trials):")
    all_steps = sorted({s for r in results for s in r["rho"]})
    say(f"{'step':>6} " + " ".join(f"{'seed ' + str(i):>12}" for i in range(len(results))) + f" {'mean':>7} {'min':>7}")
    suggested = None
    for step in all_steps:
        rhos = [r["rho"][step][0] for r in results if step in r["rho"]]
        mean = statistics.fmean(rhos)
        cells = [f"{r['rho'][step][0]:>+7.2f} (n={r['rho'][step][1]:>2})" if step in r["rho"] else f"{'-':>12}"
                 for r in results]
        say(f"{step:>6} " + " ".join(cells) + f" {mean:>+7.2f} {min(rhos):>+7.2f}")
        if suggested is None and mean >= args.min_rho and step < steps:
            suggested = step
    if suggested is None:
        say(f"no evaluation before the last reaches a mean rho of {args.min_rho}: pruning would act on noise")
    else:
        say(f"first step with mean rho >= {args.min_rho}: {suggested} = {suggested / steps:.2f} x trainer.steps "
            f"(pruning may act from there: study.warmup_fraction <= {suggested / steps:.2f}, counted as n_warmup_steps "
            f"{suggested - 1} or more)")

    say("\n2. Steps spent and best values")
    saved_all = []
    for r in results:
        s_none, s_median = r["summaries"]["none"], r["summaries"]["median"]
        saved = 1 - s_median["steps"] / s_none["steps"]
        saved_all.append(saved)
        say(f"sampler seed {r['cfg'].study.seed}:")
        say(f"  {'pruner':<8} {'trials':>6} {'complete':>8} {'pruned':>6} {'failed':>6} {'steps':>7} "
            + " ".join(f"{'best ' + m:>12}" for m in names))
        for pruner, s in r["summaries"].items():
            say(f"  {pruner:<8} {s['trials']:>6} {s['complete']:>8} {s['pruned']:>6} {s['failed']:>6} {s['steps']:>7} "
                + " ".join(f"{format_metric(m, v):>12}" for m, v in zip(names, s["best"], strict=True)))
        say(f"  steps saved: {100 * saved:.0f}%; seed noise of the unpruned study: {describe(s_none['noise'])}")
    say(f"steps saved over {len(results)} sampler seeds: {', '.join(f'{100 * v:.0f}%' for v in saved_all)}; "
        f"mean {100 * statistics.fmean(saved_all):.0f}% (goal >= 40%)")

    say("\n3. The answer kept (pruned vs unpruned study of the same sampler seed)")
    for r in results:
        agree, shared = r["signs"]
        say(f"  sampler seed {r['cfg'].study.seed}: top-3 configs in common {r['top3']}/3 exactly, "
            f"{r['top3_layers']}/3 as layer choices; per-layer effects with the same sign {agree}/{shared}")
        none, median = r["verdicts"]["none"], r["verdicts"]["median"]
        early = f"pruned at step {median['@step']}" if "@step" in median else "pruned, early step"
        say(f"    {'layer':<24} {'unpruned':>15} {'pruned':>15} {early:>24}")
        for layer in sorted(k for k in none if "@" not in k):
            say(f"    {layer:<24} {none[layer]:>15} {median.get(layer, '-'):>15} {median.get(layer + '@early', '-'):>24}")
    say(f"  mean: top-3 overlap {statistics.fmean(r['top3'] for r in results):.1f}/3 exactly, "
        f"{statistics.fmean(r['top3_layers'] for r in results):.1f}/3 as layer choices; effect signs agreeing "
        f"{sum(r['signs'][0] for r in results)}/{sum(r['signs'][1] for r in results)}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
