"""The confirmation's answer: mean and spread over seeds, the long-run ranking and its agreement with the
short runs, and Welch's test of the winner against each baseline (confirm.json, confirm.md, the console)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from ...outputs import RANDOM_BANNER
from ...trial.metric_registry import format_metric, format_table
from ..stats import rank_correlation, verdict, welch_test
from .plan import Candidate, ConfirmPlan

__all__ = ["render_markdown", "summarise", "summary_lines"]


def summarise(study_name: str, random_weights: bool, plan: ConfirmPlan, objectives: Sequence[tuple[str, str]],
              candidates: Sequence[Candidate], per_seed: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """confirm.json: per config mean and std over seeds, the long-run rank, rank agreement, verdicts.

    Args:
        per_seed: config key -> one row per finished seed, ``{"seed": s, <metric>: value, ...}``; seeds whose
            training diverged carry ``"failed": reason`` instead of values.
    """
    names = [m for m, _ in objectives]
    primary, lower = names[0], objectives[0][1] == "minimize"
    configs = []
    for c in candidates:
        rows = [r for r in per_seed.get(c.key, []) if "failed" not in r]
        values = {m: [float(r[m]) for r in rows] for m in names}
        configs.append({
            "key": c.key, "trial": c.trial, "baseline": c.baseline, "label": c.label, "layer_config": c.layer_config,
            "short_run": c.short_run,
            "mean": {m: statistics.fmean(v) for m, v in values.items() if v},
            "std": {m: statistics.stdev(v) for m, v in values.items() if len(v) > 1},
            "n_seeds": len(rows), "long_rank": None, "per_seed": list(per_seed.get(c.key, [])),
        })
    scored = sorted((c for c in configs if primary in c["mean"]),
                    key=lambda c: c["mean"][primary] if lower else -c["mean"][primary])
    for rank, c in enumerate(scored, 1):
        c["long_rank"] = rank
    paired = [c for c in configs if primary in c["mean"] and primary in c["short_run"]]
    correlation = rank_correlation([c["short_run"][primary] for c in paired], [c["mean"][primary] for c in paired])
    short_best = min((c for c in configs if primary in c["short_run"]), default=None,
                     key=lambda c: c["short_run"][primary] if lower else -c["short_run"][primary])
    winner = scored[0] if scored else None
    comparisons = []
    for base in configs:
        if winner is None or not base["baseline"] or base is winner or not base["n_seeds"]:
            continue
        for metric, direction in objectives:
            ours = [float(r[metric]) for r in winner["per_seed"] if "failed" not in r]
            theirs = [float(r[metric]) for r in base["per_seed"] if "failed" not in r]
            test = welch_test(ours, theirs, confidence=1 - plan.alpha)
            comparisons.append({
                "winner": winner["key"], "baseline": base["baseline"], "baseline_key": base["key"], "metric": metric,
                "difference": test.difference, "better_if": "lower" if direction == "minimize" else "higher",
                "ci_low": test.ci_low, "ci_high": test.ci_high, "p_value": test.p_value, "test": "welch_t",
                "alpha": plan.alpha,
                "verdict": verdict(test, direction == "minimize", plan.alpha),
            })
    return {
        "study": study_name, "random_weights": bool(random_weights), "steps": plan.steps,
        "seeds": list(plan.seeds), "primary": primary, "objectives": [[m, d] for m, d in objectives],
        "eval_every": plan.eval_every,
        "configs": configs,
        "rank_correlation": {"spearman": correlation.spearman, "kendall": correlation.kendall, "n": correlation.n},
        "winner": winner["key"] if winner else None,
        "short_run_winner": short_best["key"] if short_best else None,
        "comparisons": comparisons,
        "test_description": f"Welch's two-sided t-test over seeds (scipy.stats.ttest_ind, equal_var=False) at alpha "
                f"{plan.alpha:g}, {100 * (1 - plan.alpha):g}% confidence interval of winner minus baseline",
    }


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def render_markdown(summary: Mapping[str, Any]) -> str:
    """confirm.md: the same facts as confirm.json, for people."""
    names = [m for m, _ in summary["objectives"]]
    primary, by_key = summary["primary"], {c["key"]: c for c in summary["configs"]}
    lines = [f"# Confirmation of study {summary['study']}", ""]
    if summary["random_weights"]:
        lines += [f"**{RANDOM_BANNER}**", ""]
    lines += [f"Each config retrained from scratch for {summary['steps']} steps with seeds "
              f"{', '.join(map(str, summary['seeds']))} (generator init and batch order); validation scores at the "
              "end, mean ± std over seeds.", ""]
    header = ["config", f"short run {primary}", *[f"{m} (mean ± std)" for m in names], "seeds", "long-run rank"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in sorted(summary["configs"], key=lambda c: (c["long_rank"] is None, c["long_rank"] or 0)):
        cells = [c["label"], format_metric(primary, c["short_run"].get(primary))]
        cells += [f"{format_metric(m, c['mean'].get(m))} ± {format_metric(m, c['std'].get(m))}" for m in names]
        cells += [str(c["n_seeds"]), str(c["long_rank"] or "-")]
        lines.append("| " + " | ".join(cells) + " |")
    rc = summary["rank_correlation"]
    lines += ["", f"Agreement of the short-run and long-run rankings by {primary} over {rc['n']} configs: "
              f"Spearman ρ = {_number(rc['spearman'], 3)}, Kendall τ = {_number(rc['kendall'], 3)}."]
    winner = by_key.get(summary["winner"])
    if winner:
        short = by_key.get(summary.get("short_run_winner"))
        holds = "it holds" if short is winner else f"the short-run winner was {short['label']}" if short else ""
        lines += ["", f"**Winner at {summary['steps']} steps: {winner['label']}**" + (f" ({holds})." if holds else ".")]
    if summary["comparisons"]:
        lines += ["", f"Winner minus baseline, {summary['test_description']}:", "",
                  "| baseline | metric | difference | better if | CI | p | verdict |", "|---|---|---|---|---|---|---|"]
        for cmp in summary["comparisons"]:
            metric = cmp["metric"]
            ci = ("n/a" if cmp["ci_low"] is None else
                  f"[{format_metric(metric, cmp['ci_low'], True)}, {format_metric(metric, cmp['ci_high'], True)}]")
            lines.append(f"| {by_key[cmp['baseline_key']]['label']} | {metric} | "
                         f"{format_metric(metric, cmp['difference'], True)} | "
                         f"{cmp['better_if']} | {ci} | {_number(cmp['p_value'], 3)} | {cmp['verdict']} |")
    failed = [(c["label"], r) for c in summary["configs"] for r in c["per_seed"] if "failed" in r]
    if failed:
        lines += ["", "Failed runs (left out of the means): "
                  + "; ".join(f"{name} seed {r['seed']}: {r['failed']}" for name, r in failed)]
    return "\n".join(lines) + "\n"


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """What the CLI prints: the table, the rank agreement, the winner, the verdicts."""
    names, primary = [m for m, _ in summary["objectives"]], summary["primary"]
    ranked = sorted(summary["configs"], key=lambda c: (c["long_rank"] is None, c["long_rank"] or 0))
    rows = {f"{c['label']} (short {format_metric(primary, c['short_run'].get(primary))})": c["mean"] for c in ranked}
    lines = [RANDOM_BANNER] if summary["random_weights"] else []
    lines += [f"mean over {len(summary['seeds'])} seeds at {summary['steps']} steps:", format_table(rows, names)]
    rc = summary["rank_correlation"]
    lines.append(f"short vs long ranking by {primary} ({rc['n']} configs): Spearman {_number(rc['spearman'], 3)}, "
                 f"Kendall {_number(rc['kendall'], 3)}")
    by_key = {c["key"]: c for c in summary["configs"]}
    if summary["winner"]:
        lines.append(f"winner: {by_key[summary['winner']]['label']}")
    lines += [f"  vs {by_key[c['baseline_key']]['label']} on {c['metric']}: {format_metric(c['metric'], c['difference'], True)} "
              f"(p={_number(c['p_value'], 3)}): {c['verdict']}" for c in summary["comparisons"]]
    return lines
