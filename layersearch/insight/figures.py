"""The report's pictures, drawn with matplotlib's Agg backend into PNG files (no browser, no network).

Optuna's matplotlib plots know nothing of baselines, pruned steps or layer configs, so these are drawn here.
Each function writes one file and returns its path; titles carry the random-weights label when it applies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .best_trials import better_if, pareto_front  # noqa: E402
from .effects import LayerEffect  # noqa: E402
from .study_summary import StudySummary, pruned_at, trial_name  # noqa: E402

RANDOM_TITLE = " [RANDOM WEIGHTS]"


def _save(fig, path: Path, random_weights: bool, title: str) -> Path:
    fig.suptitle(title + (RANDOM_TITLE if random_weights else ""), color="red" if random_weights else "black",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def pareto_figure(path: Path, summary: StudySummary, metrics: Sequence[str]) -> Path:
    """Every complete trial on two objectives, the front joined and highlighted, baselines named."""
    i, j = (summary.metrics.index(m) for m in metrics)
    front = {t.number for t in pareto_front(summary)}
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    others = [t for t in summary.complete if t.number not in front]
    ax.scatter([t.values[i] for t in others], [t.values[j] for t in others], s=18, c="0.6", label="trial")
    on_front = sorted((t for t in summary.complete if t.number in front), key=lambda t: t.values[i])
    ax.plot([t.values[i] for t in on_front], [t.values[j] for t in on_front], "o-", c="tab:red", ms=6,
            label="Pareto front")
    for t in summary.baselines:
        ax.scatter([t.values[i]], [t.values[j]], marker="s", s=40, facecolors="none", edgecolors="tab:blue")
        ax.annotate(t.user_attrs["baseline"], (t.values[i], t.values[j]), fontsize=8, xytext=(4, 4),
                    textcoords="offset points", color="tab:blue")
    for t in on_front:
        ax.annotate(f"#{t.number}", (t.values[i], t.values[j]), fontsize=7, xytext=(4, -10),
                    textcoords="offset points", color="tab:red")
    directions = dict(summary.objectives)
    ax.set_xlabel(f"{metrics[0]} ({better_if(directions[metrics[0]])} is better)")
    ax.set_ylabel(f"{metrics[1]} ({better_if(directions[metrics[1]])} is better)")
    ax.legend(fontsize=8)
    return _save(fig, path, summary.random_weights, f"{summary.name}: Pareto front ({len(summary.complete)} trials)")


def history_figure(path: Path, summary: StudySummary) -> Path:
    """Objective per trial and best so far, one panel per objective; baselines as lines, pruned trials marked."""
    n = len(summary.objectives)
    fig, axes = plt.subplots(n, 1, figsize=(7, 2.8 * n), squeeze=False, sharex=True)
    for i, (metric, direction) in enumerate(summary.objectives):
        ax = axes[i][0]
        done = sorted(summary.complete, key=lambda t: t.number)
        ax.scatter([t.number for t in done], [t.values[i] for t in done], s=14, c="tab:gray", label="complete")
        best, xs, ys = None, [], []
        for t in done:
            v = t.values[i]
            best = v if best is None or (v < best if direction == "minimize" else v > best) else best
            xs.append(t.number)
            ys.append(best)
        ax.step(xs, ys, where="post", c="tab:red", label="best so far")
        for k, t in enumerate(summary.baselines):
            ax.axhline(t.values[i], ls="--", lw=0.8, c=f"C{k % 10}", label=t.user_attrs["baseline"])
        if i == 0:
            stops = [(t.number, pruned_at(t)) for t in summary.trials if t.state.name == "PRUNED"]
            stops = [(n_, s) for n_, s in stops if s is not None]
            if stops:
                ax.scatter([n_ for n_, _ in stops], [s[1] for _, s in stops], marker="x", c="tab:orange",
                           label="pruned (value at its last step)")
                for n_, (step, value) in stops:
                    ax.annotate(f"@{step}", (n_, value), fontsize=6, xytext=(2, 2), textcoords="offset points")
        ax.set_ylabel(f"{metric}\n({better_if(direction)} better)")
        ax.legend(fontsize=7, loc="best")
    axes[-1][0].set_xlabel("trial number")
    return _save(fig, path, summary.random_weights, f"{summary.name}: optimisation history")


def layers_figure(path: Path, effects: Sequence[LayerEffect], metric: str, random_weights: bool,
                  several_networks: bool = False) -> Path:
    """Each layer's effect from the joint model with its 90% interval; green helps, red hurts (Holm), grey unclear.

    Layers without an estimate (too few trials) are left out; the table lists them.
    """
    rows = [e for e in effects if e.difference is not None][::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.35 * max(len(rows), 3) + 1.2))
    labels = [(f"{e.arch}: " if several_networks else "") + e.layer + (" (style)" if e.group == "style" else "")
              for e in rows]
    colors = ["tab:green" if e.helps else "tab:red" if e.helps is False else "0.6" for e in rows]
    ax.barh(range(len(rows)), [e.difference for e in rows], color=colors)
    for k, e in enumerate(rows):
        if e.ci_low is not None:
            ax.plot([e.ci_low, e.ci_high], [k, k], c="black", lw=1.2)
    ax.axvline(0, c="black", lw=0.6)
    ax.set_yticks(range(len(rows)), labels)
    better = rows[0].better_if if rows else "lower"
    ax.set_xlabel(f"effect of using the layer on {metric} ({better} is better; joint model)\n"
                  "black: 90% interval; green helps, red hurts, grey unclear (Holm)")
    return _save(fig, path, random_weights, "Per-layer effect")


def importance_figure(path: Path, scores: Mapping[str, Mapping[str, float]], random_weights: bool) -> Path:
    """One horizontal bar chart per objective: the derived quantities by fANOVA importance."""
    n = len(scores)
    names = list(dict.fromkeys(k for s in scores.values() for k in s))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 0.3 * max(len(names), 3) + 1.4), squeeze=False, sharey=True)
    order = sorted(names, key=lambda k: sum(s.get(k, 0.0) for s in scores.values()))
    for ax, (metric, s) in zip(axes[0], scores.items(), strict=True):
        ax.barh(range(len(order)), [s.get(k, 0.0) for k in order], color="tab:purple")
        ax.set_yticks(range(len(order)), order)
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel("importance (sums to 1)")
    return _save(fig, path, random_weights, "Importance of the searched quantities (fANOVA)")


def ratio_figure(path: Path, summary: StudySummary, ratios: Mapping[int, float]) -> Path:
    """Each objective against the content/style ratio (log axis); baselines as open squares."""
    n = len(summary.objectives)
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.6), squeeze=False)
    for ax, (i, (metric, direction)) in zip(axes[0], enumerate(summary.objectives), strict=True):
        done = [t for t in summary.complete if t.number in ratios]
        ax.scatter([ratios[t.number] for t in done], [t.values[i] for t in done], s=16, c="tab:gray")
        for t in done:
            if t.user_attrs.get("baseline"):
                ax.scatter([ratios[t.number]], [t.values[i]], marker="s", s=40, facecolors="none",
                           edgecolors="tab:blue")
                ax.annotate(trial_name(t), (ratios[t.number], t.values[i]), fontsize=7, color="tab:blue")
        ax.set_xscale("log")
        ax.set_xlabel("content/style ratio (content_weight / style_weight)")
        ax.set_ylabel(f"{metric} ({better_if(direction)} better)")
    return _save(fig, path, summary.random_weights, "Objectives against the content/style ratio")
