"""The confirmation's answer: the race's verdict for each config (best, worse than the best, or not
distinguishable from it with this budget), the blocks each verdict rests on, the runs the race saved, mean and
spread over seeds, and the agreement of the short-run and long-run rankings (confirm.json, confirm.md, console)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from ...outputs import RANDOM_BANNER
from ...trial.metric_registry import format_metric, format_table
from ..stats import rank_correlation
from .plan import Candidate, ConfirmPlan
from .race import BEST, FAILED, OPEN, WORSE, RaceState, race, scores_of

__all__ = ["race_of", "render_markdown", "summarise", "summary_lines", "verdict_text"]


def race_of(plan: ConfirmPlan, objectives: Sequence[tuple[str, str]], candidates: Sequence[Candidate],
            per_seed: Mapping[str, Sequence[Mapping[str, Any]]]) -> tuple[RaceState, bool]:
    """The race on the primary objective replayed from the per-seed rows; and whether it had per-image blocks."""
    primary, lower = objectives[0][0], objectives[0][1] == "minimize"
    scores, failed, per_image = scores_of(per_seed, primary)
    state = race(scores, [c.key for c in candidates], list(plan.seeds), lower, plan.alpha, plan.first_test, failed)
    return state, per_image


def _number_of(label: str) -> str:
    return label.split(" ", 1)[0]  # "#12 relu2_2+relu4_3" -> "#12"


def verdict_text(verdict: Mapping[str, Any], primary: str) -> str:
    """One line: "best", "worse than #N (p=...)", "not distinguishable from #N with this budget", "failed"."""
    blocks = f"{verdict['blocks']} blocks = {verdict['seeds']} seeds x {verdict['images']} images" \
        if verdict["images"] > 1 else f"{verdict['blocks']} blocks = seeds"
    status = verdict["status"]
    if verdict["versus"] is None and status != FAILED and status != BEST:
        return f"not decided: the race has not finished ({blocks})"
    if status == BEST:
        return f"best ({blocks})"
    if status == FAILED:
        return f"failed at seed {verdict['failed_seed']}, left the race ({verdict['reason']})"
    p = "p=n/a" if verdict["p_value"] is None else f"p={verdict['p_value']:.3g}"
    gap = f"{primary} {format_metric(primary, verdict['difference'], True)}" if verdict["difference"] is not None else ""
    facts = ", ".join(x for x in (gap, p, blocks) if x)
    if status == WORSE:
        return f"worse than {_number_of(verdict['versus_label'])} ({facts})"
    return f"not distinguishable from {_number_of(verdict['versus_label'])} with this budget ({facts})"


def _long_rank_key(config: Mapping[str, Any], sign: float, primary: str) -> tuple:
    # Survivors by mean, then configs dropped later before those dropped earlier, failed ones last.
    v = config["verdict"]
    group = {BEST: 0, OPEN: 0, WORSE: 1, FAILED: 2}[v["status"]]
    mean = config["mean"].get(primary)
    return (group, -(v["round"] or 0), mean is None, sign * mean if mean is not None else 0.0)


def summarise(study_name: str, random_weights: bool, plan: ConfirmPlan, objectives: Sequence[tuple[str, str]],
              candidates: Sequence[Candidate], per_seed: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """confirm.json: the race's verdicts, per config mean and std over its seeds, long-run rank, rank agreement.

    Args:
        per_seed: config key -> one row per finished seed, ``{"seed": s, <metric>: value, ..., "per_image":
            {metric: [value per validation image]}, "images": [names]}``; runs that report means only have no
            ``per_image``; seeds whose training failed carry ``"failed": reason`` instead of values.
    """
    names = [m for m, _ in objectives]
    primary, lower = names[0], objectives[0][1] == "minimize"
    sign = 1.0 if lower else -1.0
    state, per_image = race_of(plan, objectives, candidates, per_seed)
    labels = {c.key: c.label for c in candidates}
    configs = []
    for c in candidates:
        all_rows = list(per_seed.get(c.key, []))
        rows = [r for r in all_rows if "failed" not in r]
        values = {m: [float(r[m]) for r in rows] for m in names}
        v = state.verdicts.get(c.key)
        verdict = {"status": v.status, "versus": v.versus, "versus_label": labels.get(v.versus or ""),
                   "p_value": v.p_value, "difference": v.difference, "blocks": v.blocks, "seeds": v.seeds,
                   "images": v.images, "round": v.round} if v else {
                   "status": OPEN, "versus": None, "versus_label": None, "p_value": None, "difference": None,
                   "blocks": 0, "seeds": 0, "images": state.images, "round": None}
        if verdict["status"] == FAILED:
            failure = next(r for r in all_rows if "failed" in r and int(r["seed"]) == plan.seeds[v.round])
            verdict.update(failed_seed=failure["seed"], reason=failure["failed"])
        verdict["text"] = verdict_text(verdict, primary)
        configs.append({
            "key": c.key, "trial": c.trial, "baseline": c.baseline, "label": c.label, "layer_config": c.layer_config,
            "short_run": c.short_run,
            "mean": {m: statistics.fmean(v) for m, v in values.items() if v},
            "std": {m: statistics.stdev(v) for m, v in values.items() if len(v) > 1},
            "n_seeds": len(rows), "long_rank": None, "verdict": verdict, "per_seed": all_rows,
        })
    for rank, c in enumerate(sorted(configs, key=lambda c: _long_rank_key(c, sign, primary)), 1):
        c["long_rank"] = rank
    # The long-run order is the race's; it goes in as a score with the primary objective's direction.
    paired = [c for c in configs if primary in c["short_run"] and c["verdict"]["status"] != FAILED]
    correlation = rank_correlation([c["short_run"][primary] for c in paired],
                                   [sign * c["long_rank"] for c in paired])
    short_best = min((c for c in configs if primary in c["short_run"]), default=None,
                     key=lambda c: sign * c["short_run"][primary])
    winner = next((c for c in configs if c["verdict"]["status"] == BEST), None)
    runs = sum(len(rows) for rows in per_seed.values())
    runs_max = len(candidates) * len(plan.seeds)
    return {
        "study": study_name, "random_weights": bool(random_weights), "steps": plan.steps,
        "seeds": list(plan.seeds), "primary": primary, "objectives": [[m, d] for m, d in objectives],
        "eval_every": plan.eval_every,
        "configs": configs,
        "rank_correlation": {"spearman": correlation.spearman, "kendall": correlation.kendall, "n": correlation.n},
        "winner": winner["key"] if winner else None,
        "short_run_winner": short_best["key"] if short_best else None,
        "race": {
            "primary": primary, "alpha": plan.alpha, "first_test": plan.first_test, "looks": state.looks,
            "level": state.level, "images": state.images,
            "blocks": "seed x image" if per_image and state.images > 1 else "seed",
            "runs": runs, "runs_max": runs_max, "runs_saved": runs_max - runs,
        },
        "test_description": _description(plan, state, per_image, primary),
    }


def _description(plan: ConfirmPlan, state: RaceState, per_image: bool, primary: str) -> str:
    blocks = (f"a block is one (seed, validation image) pair, {state.images} images per seed" if per_image
              and state.images > 1 else
              "a block is one seed (this training reports mean scores only, not per-image ones)")
    return (f"race on {primary}, every config trained with the same seeds and scored on the same images; {blocks}. "
            "After each seed round: a blocked quasi-F test of the configs still in (seeds and images as random "
            "blocks; a run's luck is shared by its images), then each against the best by the paired blocked t, "
            f"Holm-adjusted; alpha {plan.alpha:g} split over {state.looks} look(s) = {state.level:.3g} per look; "
            f"no test before {plan.first_test} blocks and 2 seeds")


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def _ranked(summary: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return sorted(summary["configs"], key=lambda c: (c["long_rank"] is None, c["long_rank"] or 0))


def _saved_line(summary: Mapping[str, Any]) -> str:
    race = summary["race"]
    return (f"{race['runs']} of {race['runs_max']} runs trained; the race saved {race['runs_saved']} "
            f"(configs out of the race train no more seeds)")


def render_markdown(summary: Mapping[str, Any]) -> str:
    """confirm.md: the same facts as confirm.json, for people."""
    names = [m for m, _ in summary["objectives"]]
    primary, by_key = summary["primary"], {c["key"]: c for c in summary["configs"]}
    lines = [f"# Confirmation of study {summary['study']}", ""]
    if summary["random_weights"]:
        lines += [f"**{RANDOM_BANNER}**", ""]
    lines += [f"Each config retrained from scratch for {summary['steps']} steps with seeds "
              f"{', '.join(map(str, summary['seeds']))} (generator init and batch order) while it stays in the race; "
              "validation scores at the end, mean ± std over the seeds it ran.", "",
              f"How: {summary['test_description']}.", ""]
    header = ["config", f"short run {primary}", *[f"{m} (mean ± std)" for m in names], "seeds", "long-run rank",
              "verdict"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in _ranked(summary):
        cells = [c["label"], format_metric(primary, c["short_run"].get(primary))]
        cells += [f"{format_metric(m, c['mean'].get(m))} ± {format_metric(m, c['std'].get(m))}" for m in names]
        cells += [str(c["n_seeds"]), str(c["long_rank"] or "-"), c["verdict"]["text"]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _saved_line(summary) + "."]
    rc = summary["rank_correlation"]
    lines += ["", f"Agreement of the short-run ranking by {primary} and the race's ranking over {rc['n']} configs: "
              f"Spearman ρ = {_number(rc['spearman'], 3)}, Kendall τ = {_number(rc['kendall'], 3)}."]
    winner = by_key.get(summary["winner"])
    if winner:
        short = by_key.get(summary.get("short_run_winner"))
        holds = "it holds" if short is winner else f"the short-run winner was {short['label']}" if short else ""
        lines += ["", f"**Best at {summary['steps']} steps: {winner['label']}**" + (f" ({holds})." if holds else ".")]
    failed = [(c["label"], r) for c in summary["configs"] for r in c["per_seed"] if "failed" in r]
    if failed:
        lines += ["", "Failed runs (left out of the means): "
                  + "; ".join(f"{name} seed {r['seed']}: {r['failed']}" for name, r in failed)]
    return "\n".join(lines) + "\n"


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """What the CLI prints: the table, one verdict line per config, runs saved, the rank agreement."""
    names, primary = [m for m, _ in summary["objectives"]], summary["primary"]
    ranked = _ranked(summary)
    rows = {f"{c['label']} (short {format_metric(primary, c['short_run'].get(primary))}, {c['n_seeds']} seeds)":
            c["mean"] for c in ranked}
    lines = [RANDOM_BANNER] if summary["random_weights"] else []
    lines += [f"mean over the seeds each config ran, at {summary['steps']} steps:", format_table(rows, names)]
    lines.append(f"race on {primary} ({summary['race']['blocks']} blocks, alpha {summary['race']['alpha']:g}):")
    lines += [f"  {c['label']}: {c['verdict']['text']}" for c in ranked]
    lines.append(_saved_line(summary))
    rc = summary["rank_correlation"]
    lines.append(f"short vs long ranking by {primary} ({rc['n']} configs): Spearman {_number(rc['spearman'], 3)}, "
                 f"Kendall {_number(rc['kendall'], 3)}")
    by_key = {c["key"]: c for c in summary["configs"]}
    if summary["winner"]:
        lines.append(f"winner: {by_key[summary['winner']]['label']}")
    return lines
