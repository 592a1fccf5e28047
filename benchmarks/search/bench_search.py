"""`make bench-search`: how many trials a layer search needs, and which sampler and pruner, measured by replaying
Optuna studies against the tabular benchmark of a real layer space (`make_table.py`, committed data file).

    .venv/bin/python benchmarks/search/bench_search.py [--seeds 100] [--workers 2] [--table FILE] [--out FILE]

Each method (sampler x pruner, one or two objectives) runs ``--seeds`` replayed studies (study seed = sampler seed =
the seed that draws the stored repeats) until it has consumed the training steps of 64 full trials (or 120
trials). Reported, at budgets of 8, 16, 32 and 64 full-trial equivalents of training steps (so that pruned studies
compare at equal compute), and as curves:

- simple regret: the table's best mean HaarPSI minus the table mean of the config the study answers (its best
  complete trial, as ``layersearch export`` takes it); mean with its standard error, and the 90th percentile;
- P(best), P(top 5%): how often that answer is the table's best config, or one of its best 5%;
- each method against the default (TPE, median pruning) by a two-sided Mann-Whitney U test on the regrets (the
  studies of two methods share no sampler state, so they are independent samples), Holm-adjusted over every
  method and budget;
- for the default: with N trials (as ``study.n_trials`` counts them, pruned ones included), the steps used and
  how close the answer is to the best, as a user reads it.

Writes ``benchmarks/results/<date>-vm-search.md`` and ``docs/img/search-benchmark.png``.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
import replay  # noqa: E402  (a sibling script, not a package)
from replay import STEPS, Method, Table  # noqa: E402

from layersearch.insight.stats import holm  # noqa: E402

TRIALS = [8, 16, 32, 64]  # study.n_trials (complete + pruned), as a user sets it
COMPUTE = [4, 8, 16, 32]  # equal-compute budgets: training steps used, in full trials (x 200 steps)
DEFAULT = "tpe + median"
BASELINES_FIRST = "tpe + median, baselines first"  # as `layersearch sweep` runs it: the space's baselines go first
METHODS = [
    Method("random, no pruning", "random", "none"),
    Method("random + median", "random", "median"),
    Method(DEFAULT, "tpe", "median"),
    Method(BASELINES_FIRST, "tpe", "median", baselines=True),
    Method("tpe, no pruning", "tpe", "none"),
    Method("tpe + median, 10 start-up trials", "tpe", "median", n_startup=10),
    Method("tpe + median from step 100", "tpe", "median", warmup=100),
    Method("tpe + successive halving", "tpe", "sh"),
    Method("tpe + hyperband", "tpe", "hyperband"),
    Method("tpe multivariate group + median", "tpe_group", "median"),
    Method("gp, no pruning", "gp", "none"),
    Method("tpe, 2 objectives + median", "tpe", "median", 2),
    Method("nsga2, 2 objectives + median", "nsga2", "median", 2),
]
TOP_K = "short run, top k"
ALPHA = 0.05

_TABLE: Table | None = None


def _init(path: Path) -> None:
    global _TABLE
    import torch

    torch.set_num_threads(1)  # GPSampler fits in torch: one thread per worker process (two threads each halve it)
    replay.quiet()
    _TABLE = Table.load(path)


def _one(job: tuple[int, int]) -> tuple[int, int, list[int], list[str | None], list[bool]]:
    index, seed = job
    trace = replay.replay(_TABLE, METHODS[index], seed, TRIALS[-1], TRIALS[-1] * STEPS)
    return index, seed, trace.steps, trace.answer, trace.pruned


def shown(path: Path) -> str:
    """A path as the results file names it: relative to the working directory (the repository root) if inside."""
    try:
        return path.resolve().relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.as_posix()


def answer_at_budget(steps: list[int], answer: list[str | None], budget_steps: int) -> str | None:
    """The study's answer once it has used at most ``budget_steps``: after its last trial that fits."""
    fitting = [a for s, a in zip(steps, answer, strict=True) if s <= budget_steps]
    return fitting[-1] if fitting else None


def regret(table: Table, config: str | None) -> float:
    """No answer yet (no trial completed within the budget) counts as the worst config's regret."""
    return table.best - (table.truth[config] if config is not None else min(table.truth.values()))


def noise_sd(table: Table) -> tuple[float, int, float, list[str]]:
    """The pooled within-config seed SD of the final HaarPSI with its df, the median of the per-config SDs (robust
    to a few runs that went wrong), and the runs that went wrong (final HaarPSI below 0.7, where every other run
    of the table is above 0.75)."""
    squares, df, sds, wrong = 0.0, 0, [], []
    for key, histories in table.runs.items():
        values = np.array([h[-1][1][replay.PRIMARY] for h in histories])
        squares += float(((values - values.mean()) ** 2).sum())
        df += len(values) - 1
        sds.append(float(values.std(ddof=1)))
        wrong += [f"{key} seed {seed} ({v:.3f})" for seed, v in enumerate(values) if v < 0.7]
    return math.sqrt(squares / df), df, float(np.median(sds)), wrong


def figure(path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], n_seeds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # The default, the two reference baselines and the sweep as shipped stand out; the variants are thin lines of
    # distinct colours (tab20 has one for each).
    emphasis = {DEFAULT: {"color": "black", "lw": 2.6}, "random, no pruning": {"color": "tab:blue", "lw": 2.4},
                TOP_K: {"color": "tab:red", "lw": 2.4},
                BASELINES_FIRST: {"color": "tab:green", "lw": 2.0, "ls": "--"}}
    tab20 = plt.get_cmap("tab20").colors  # without the blues, greens and reds of the emphasised lines
    palette = iter([tab20[i] for i in (2, 3, 8, 9, 10, 11, 12, 13, 14, 16, 18, 19)])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.5, 4.6))
    for name, (x, mean_regret, p_top) in curves.items():
        style = emphasis.get(name) or {"color": next(palette), "lw": 1.0}
        left.plot(x, mean_regret, label=name, **style)
        right.plot(x, p_top, label=name, **style)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4, 8, 16, 32, 64], ["1", "2", "4", "8", "16", "32", "64"])
        ax.set_xlabel("budget: training steps used, in full trials (200 steps)")
        ax.grid(alpha=0.3)
    left.set_ylabel("mean simple regret (HaarPSI)")
    right.set_ylabel("P(answer is a top-5% config)")
    right.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Replayed studies on the SR x4 EfficientNet-Lite0 table ({n_seeds} studies per method)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--table", type=Path, default=Path(__file__).with_name("table-sr-lite0.jsonl"))
    parser.add_argument("--out", type=Path, default=Path(f"benchmarks/results/{time.strftime('%Y-%m-%d')}-vm-search.md"))
    parser.add_argument("--figure", type=Path, default=Path("docs/img/search-benchmark.png"))
    args = parser.parse_args()
    started = time.perf_counter()
    table = Table.load(args.table)
    jobs = [(i, s) for i in range(len(METHODS)) for s in range(args.seeds)]
    by_seed: dict[int, dict[int, tuple[list[int], list[str | None], list[bool]]]] = {i: {} for i in range(len(METHODS))}
    with mp.get_context("spawn").Pool(args.workers, initializer=_init, initargs=(args.table,)) as pool:
        for done, (i, seed, steps, answer, pruned) in enumerate(pool.imap_unordered(_one, jobs, chunksize=4), 1):
            by_seed[i][seed] = (steps, answer, pruned)
            if done % 100 == 0 or done == len(jobs):
                print(f"[{done}/{len(jobs)} studies] {time.perf_counter() - started:.0f} s", flush=True)
    traces = {i: [runs[s] for s in sorted(runs)] for i, runs in by_seed.items()}  # seed order: the same output every run

    top5, best = table.top(0.05), max(table.truth, key=table.truth.get)
    names = [m.name for m in METHODS]
    pooled, df, sd, wrong = noise_sd(table)
    spread = np.array(sorted(table.truth.values(), reverse=True))

    def top_k_answers(budget_steps: float) -> list[str]:
        return [replay.short_run_top_k(table, s, int(budget_steps)) for s in range(args.seeds)]

    # By trials: each study's answer after its N-th trial; the top-k baseline at the steps N unpruned trials cost.
    by_trials = {n: {name: [a[n - 1] for _, a, _ in traces[i]] for i, name in enumerate(names)} for n in TRIALS}
    steps_at = {n: {name: np.array([s[n - 1] for s, _, _ in traces[i]]) / STEPS for i, name in enumerate(names)}
                for n in TRIALS}
    for n in TRIALS:
        by_trials[n][TOP_K] = top_k_answers(n * STEPS)
        steps_at[n][TOP_K] = np.full(args.seeds, float(n))
    # At equal compute: the answer after the last trial that fits in the budget. A pruned study that ended its 64
    # trials below the budget keeps its last answer: it had less compute, which can only count against it.
    by_compute = {b: {name: [answer_at_budget(s, a, b * STEPS) for s, a, _ in traces[i]]
                      for i, name in enumerate(names)} for b in COMPUTE}
    reached = {b: {name: sum(s[-1] >= b * STEPS for s, _, _ in traces[i]) for i, name in enumerate(names)}
               for b in COMPUTE}
    for b in COMPUTE:
        by_compute[b][TOP_K] = top_k_answers(b * STEPS)

    def compare(family: dict[int, dict[str, list]]) -> dict[tuple[int, str], float]:
        """Two-sided Mann-Whitney U of each method's regrets against the default's, Holm over the family."""
        keys, raw = [], []
        for b, per in family.items():
            base = np.array([regret(table, a) for a in per[DEFAULT]])
            for name, answers in per.items():
                if name == DEFAULT:
                    continue
                r = np.array([regret(table, a) for a in answers])
                keys.append((b, name))
                raw.append(1.0 if np.array_equal(r, base) else
                           float(stats.mannwhitneyu(r, base, alternative="two-sided").pvalue))
        return dict(zip(keys, holm(raw), strict=True))

    def versus(p_by: dict, b: int, name: str, r: np.ndarray, base: np.ndarray) -> str:
        if name == DEFAULT:
            return "-"
        p = p_by[(b, name)]
        if p >= ALPHA:
            return f"= (p {p:.2g})"
        return ("better" if r.mean() < base.mean() else "worse") + f" (p {p:.2g})"

    p_trials, p_compute = compare(by_trials), compare(by_compute)
    lines = [
        f"# The search measured on a tabular benchmark ({time.strftime('%Y-%m-%d')})", "",
        f"Command: `make bench-search` (`python benchmarks/search/bench_search.py --seeds {args.seeds}`) on this "
        f"machine ({mp.cpu_count()} cores, {args.workers} workers); its time is at the end.", "",
        f"Table: `{shown(args.table)}`, made by `{table.meta.get('command')}` "
        f"({table.seconds / 60:.0f} min of training summed over runs, {table.meta.get('workers')} worker processes "
        f"on {table.meta.get('machine')}): {len(table.truth)} configs of `search_space=sr_lite0` (EfficientNet-Lite0, "
        f"real ImageNet weights) made discrete: layers {', '.join(table.meta['layers'])}, 1 or 2 of them, weights "
        f"{table.meta['weight_levels']}, pixel weight {table.meta['pixel_levels']}, and the pixel loss alone; each "
        f"trained {table.n_seeds} times (trainer seeds 0..{table.n_seeds - 1}) at the quickstart's budget "
        f"(`preset=offline`: 200 steps, evaluated every 25).", "",
        f"- Best config (table mean HaarPSI over {table.n_seeds} seeds): `{best}` {table.best:.4f}; "
        f"top 5% = {len(top5)} configs (>= {spread[len(top5) - 1]:.4f}); median config {np.median(spread):.4f}; "
        f"worst {spread[-1]:.4f}.",
        f"- Seed noise of the final HaarPSI: median within-config SD {sd:.4f} (over {len(table.truth)} configs of "
        f"{table.n_seeds} runs); the pooled SD, {pooled:.4f} (df {df}), is inflated by {len(wrong)} runs that went "
        f"wrong ({'; '.join(wrong) or 'none'}). 'noise SD' below is the median one. The best and the 2nd best config "
        f"differ by {spread[0] - spread[1]:.4f} ({(spread[0] - spread[1]) / sd:.1f} noise SD), the best and the "
        f"median config by {spread[0] - np.median(spread):.4f} ({(spread[0] - np.median(spread)) / sd:.1f} SD). "
        f"Regret is measured against the table means, which are themselves means of {table.n_seeds} runs.",
        f"- {args.seeds} replayed studies per method (seeds 0..{args.seeds - 1}), each up to {TRIALS[-1]} trials. "
        "A query returns one stored seed repeat at random. Regret: mean (standard error) and 90th percentile. "
        "'vs default': two-sided Mann-Whitney U of the regrets against the default's, Holm-adjusted within each "
        f"table ({len(p_trials)} and {len(p_compute)} comparisons); '=': not distinguishable at {ALPHA}.", "",
        "## By number of trials (`study.n_trials`, pruned trials included)", "",
        f"The top-k baseline ({TOP_K}) is given the training steps of N unpruned trials.", "",
    ]
    for n in TRIALS:
        base = np.array([regret(table, a) for a in by_trials[n][DEFAULT]])
        lines += [f"### {n} trials", "", "| method | steps used (full trials) | regret | 90th pct | P(best) | "
                  "P(top 5%) | vs default |", "|---|---|---|---|---|---|---|"]
        for name, answers in by_trials[n].items():
            r = np.array([regret(table, a) for a in answers])
            lines.append(f"| {name} | {steps_at[n][name].mean():.1f} | {r.mean():.4f} ({r.std(ddof=1) / math.sqrt(len(r)):.4f}) | "
                         f"{np.quantile(r, 0.9):.4f} | {np.mean([a == best for a in answers]):.2f} | "
                         f"{np.mean([a in top5 for a in answers]):.2f} | {versus(p_trials, n, name, r, base)} |")
        lines.append("")
    lines += ["## At equal compute (training steps used, in full trials of 200 steps)", "",
              "| method | " + " | ".join(f"{b}: regret / P(top 5%) / vs default" for b in COMPUTE) + " |",
              "|---|" + "---|" * len(COMPUTE)]
    for name in names + [TOP_K]:
        cells = []
        for b in COMPUTE:
            answers = by_compute[b][name]
            r = np.array([regret(table, a) for a in answers])
            base = np.array([regret(table, a) for a in by_compute[b][DEFAULT]])
            short = reached[b].get(name, args.seeds)
            note = f" [{short} of {args.seeds} reached it]" if short < args.seeds else ""
            cells.append(f"{r.mean():.4f} ({r.std(ddof=1) / math.sqrt(len(r)):.4f}) / "
                         f"{np.mean([a in top5 for a in answers]):.2f} / {versus(p_compute, b, name, r, base)}{note}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    # The user's table: the default with N trials, as study.n_trials counts them.
    i_default = names.index(DEFAULT)
    lines += ["", f"## With N trials: the default ({DEFAULT}: {replay.N_STARTUP} start-up trials, median pruning "
              f"from step {replay.WARMUP} of {STEPS})", "",
              "| trials | steps used (full trials) | trials pruned | regret: median / 90th pct | "
              "P(regret <= 1 noise SD) | P(best) | P(top 5%) |", "|---|---|---|---|---|---|---|"]
    for n in TRIALS:
        r = np.array([regret(table, a) for a in by_trials[n][DEFAULT]])
        pruned = np.mean([sum(p[:n]) for _, _, p in traces[i_default]])
        lines.append(f"| {n} | {steps_at[n][DEFAULT].mean():.1f} | {pruned:.1f} | {np.median(r):.4f} / "
                     f"{np.quantile(r, 0.9):.4f} | {np.mean(r <= sd):.2f} | "
                     f"{np.mean([a == best for a in by_trials[n][DEFAULT]]):.2f} | "
                     f"{np.mean([a in top5 for a in by_trials[n][DEFAULT]]):.2f} |")

    # Curves against steps used, each drawn as far as every one of its studies reached.
    curves = {}
    for name in names + [TOP_K]:
        reach = TRIALS[-1] if name == TOP_K else min(s[-1] for s, _, _ in traces[names.index(name)]) / STEPS
        xs = np.geomspace(1, reach, 20)
        if name == TOP_K:
            per_x = [top_k_answers(x * STEPS) for x in xs]
        else:
            per_x = [[answer_at_budget(s, a, int(x * STEPS)) for s, a, _ in traces[names.index(name)]] for x in xs]
        curves[name] = (xs, np.array([np.mean([regret(table, a) for a in ans]) for ans in per_x]),
                        np.array([np.mean([a in top5 for a in ans]) for ans in per_x]))
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    figure(args.figure, curves, args.seeds)
    lines += ["", f"Curves: `{shown(args.figure)}`.", "",
              f"Total time: {time.perf_counter() - started:.0f} s."]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.out} and {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
