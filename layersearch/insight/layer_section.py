"""The report's "Per-layer effect" section as blocks: what the joint model can and cannot conclude, the
per-layer and per-network tables, the step table that uses pruned trials, and the rows of layers.csv."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from ..lossnet.registry import gram_ok
from ..trial.metric_registry import format_metric
from .effects import (
    ALPHA,
    EXACT_FIT,
    FEW_DF,
    FEW_ON_A_SIDE,
    LEVEL,
    MIN_DF,
    MIN_PER_SIDE,
    NO_SPREAD,
    NOT_SEPARABLE,
    EffectTable,
    LayerEffect,
    NetworkEffect,
)
from .layout import Block, Heading, Para, Table
from .study_summary import StudySummary

__all__ = ["LAYER_COLUMNS", "GRAM_ON_RESNET", "effect_blocks", "layers_csv", "network_blocks"]

LAYER_COLUMNS = ["group", "layer", "n_with", "n_without", "median_with", "median_without", "difference",
                 "ci90_low", "ci90_high", "better_if", "top_decile_uses", "top_decile_size",
                 "top_decile_median_weight", "verdict", "arch", "p_value", "p_holm"]
GRAM_ON_RESNET = ("† Gram (style) terms on a ResNet: residual features give poor Gram statistics "
                  "(Wang, Li & Vasconcelos, CVPR 2021), so read these rows and configs with care.")
#: What the simulations in tests/insight/test_effects.py measured; quoted so a reader can judge the method.
CHECKED = ("Checked by simulation: the 90% intervals covered the true effect in 91% of 2,000 synthetic 40-trial "
           "studies whose layer had only 5 trials on one side (87% when those 5 were three times as noisy as the "
           "rest); in 2,000 null studies (40 trials, five candidate layers, no effect) 6.3% called any layer "
           "helpful or harmful, where uncorrected 90% intervals would have in 30%.")


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def layer_label(row: LayerEffect, several_networks: bool) -> str:
    mark = " †" if row.group == "style" and not gram_ok(row.arch) else ""
    return (f"{row.arch}: " if several_networks else "") + row.layer + (" (style)" if row.group == "style" else "") + mark


def _interval(metric: str, row) -> str:
    """The interval, or "n/a: " and why there is none (a bare "n/a" would leave the reader guessing)."""
    if row.ci_low is None:
        return f"n/a: {row.note}" if row.note else "n/a"
    return f"[{format_metric(metric, row.ci_low, signed=True)}, {format_metric(metric, row.ci_high, signed=True)}]"


def _effect(metric: str, row) -> str:
    return "n/a" if row.difference is None else format_metric(metric, row.difference, signed=True)


def _and(items: Sequence[str]) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def _untested(table: EffectTable, what: str) -> list[str]:
    """Why the rows without a test got none, one phrase per reason with its count (and the numbers where the
    reason is the whole model's)."""
    sides = "with it or without it" if what == "layer" else "on it or on the others"
    phrases = {
        FEW_ON_A_SIDE: lambda k: f"{k} had fewer than {MIN_PER_SIDE} trials {sides}",
        FEW_DF: lambda k: (f"for {k}, the joint model of {table.n_terms} terms on {table.n_trials} "
                           f"trials leaves {max(table.df, 0)} residual degree{'s' * (table.df != 1)} of freedom, "
                           f"fewer than the {MIN_DF} needed"),
        NOT_SEPARABLE: lambda k: f"{k} could not be separated from other terms (no trial tells them apart)",
        EXACT_FIT: lambda k: (f"{k} had {'an estimate' if k == 1 else 'estimates'} depending on trials the model "
                              "fits exactly, whose noise it cannot measure"),
        NO_SPREAD: lambda k: f"{k} had no residual spread to measure noise with",
    }
    counts = {why: sum(r.p_value is None and r.why == why for r in table.rows) for why in phrases}
    return [phrases[why](k) for why, k in counts.items() if k]


def _tested(table: EffectTable, what: str) -> str:
    """"3 layers tested", or, when none was, that none could be and why."""
    if table.tested:
        return f"{table.tested} {what}{'s' * (table.tested != 1)} tested"
    return f"no {what} could be tested: " + "; ".join(_untested(table, what) or [f"no {what} was searched"])


def _conclusion(table: EffectTable, label, what: str) -> str:
    good, bad = ("helps", "hurts") if what == "layer" else ("better", "worse")
    helps = [label(r) for r in table.rows if r.verdict == good]
    hurts = [label(r) for r in table.rows if r.verdict == bad]
    unclear = sum(r.verdict == "unclear" and r.p_value is not None for r in table.rows)
    untested = sum(r.p_value is None for r in table.rows)
    parts = []
    if helps:
        parts.append(f"{_and(helps)} help{'s' * (len(helps) == 1)}" if what == "layer"
                     else f"{_and(helps)} {'is' if len(helps) == 1 else 'are'} better than the others")
    if hurts:
        parts.append(f"{_and(hurts)} hurt{'s' * (len(hurts) == 1)}" if what == "layer"
                     else f"{_and(hurts)} {'is' if len(hurts) == 1 else 'are'} worse than the others")
    if not parts:
        parts.append(f"not enough evidence to call any {what} helpful or harmful")
    if unclear and (helps or hurts):
        parts.append(f"not enough evidence either way for the other {unclear} tested")
    if untested:
        parts.append(f"{untested} could not be tested ({'; '.join(_untested(table, what))}; each row says why)")
    return f"From {table.n_trials} trials: " + "; ".join(parts) + "."


def _rows(summary: StudySummary, table: EffectTable) -> list[list[str]]:
    metric = summary.metrics[0]
    several = len(summary.archs) > 1
    return [[layer_label(r, several), f"{r.n_with} / {r.n_without}",
             f"{format_metric(metric, r.median_with)} / {format_metric(metric, r.median_without)}",
             _effect(metric, r), _interval(metric, r), _p(r.p_adjusted), r.verdict, f"{r.top_uses}/{r.top_size}",
             "n/a" if r.top_weight is None else f"{r.top_weight:.3g}"] for r in table.rows]


def _headers(summary: StudySummary) -> list[str]:
    metric, direction = summary.objectives[0]
    better = "lower" if direction == "minimize" else "higher"
    return ["layer", "trials with / without", f"median {metric} with / without",
            f"effect on {metric} ({better} is better)", f"{LEVEL:.0%} interval", "p (Holm)", "verdict",
            "top decile uses", "top-decile weight"]


def _method(summary: StudySummary, table: EffectTable) -> list[str]:
    """Two paragraphs: how the effects are estimated, and the rules that decide what the table may say."""
    metric = summary.metrics[0]
    covariates = [t for t in table.terms if t != "intercept" and ":" not in t and not t.startswith("network=")]
    extra = (["the loss network"] if any(t.startswith("network=") for t in table.terms) else []) + covariates
    further = f", with {_and(extra)} as {'further terms' if len(extra) > 1 else 'a further term'}" if extra else ""
    model = (
        f"Method: one least-squares regression of {metric} on which candidate layers each trial used"
        + (" (a layer on each network is its own candidate)" if len(summary.archs) > 1 else "") + further
        + ", so that layers sampled together are not credited with each other's effects. The effect is the "
        f"change in {metric} from using the layer, averaged over the weights the search sampled for it. "
        f"{LEVEL:.0%} intervals use HC3 heteroskedasticity-robust standard errors and a t quantile on the "
        f"residual degrees of freedom ({table.n_trials} trials, {table.n_terms} terms, df {table.df}). The medians "
        "with / without are descriptive only: they mix in the layers each was sampled with.")
    rules = (
        f"Rules: a layer gets an interval only with at least {MIN_PER_SIDE} trials with it and {MIN_PER_SIDE} "
        f"without (on its network), and only when the model keeps at least {MIN_DF} residual degrees of freedom. "
        f"A verdict, helps or hurts, needs the layer's two-sided p-value, Holm-adjusted over the layers tested "
        f"({_tested(table, 'layer')}), below {ALPHA:.2f}: at most a {ALPHA:.0%} chance of any false call in the "
        f"table, so an interval that barely excludes 0 can still read unclear. {CHECKED}")
    return [model, rules]


def effect_blocks(summary: StudySummary, table: EffectTable, step_table: EffectTable | str) -> list[Block]:
    """The per-layer section: method, plain conclusion, the complete-trial table, then the step table."""
    several = len(summary.archs) > 1
    blocks: list[Block] = [Heading("Per-layer effect"), *(Para(text) for text in _method(summary, table))]
    if not table.rows:
        return [*blocks, Para("the search space has no candidate layers, so there is no per-layer effect", "note")]
    label = lambda r: layer_label(r, several)  # noqa: E731
    blocks.append(Para("Complete trials. " + _conclusion(table, label, "layer")))
    pruned = summary.counts.get("pruned", 0)
    if pruned:
        blocks.append(Para(f"{pruned} pruned trial{'s are' if pruned != 1 else ' is'} missing from this table. "
                           "Pruning stops trials for poor early values, so a layer whose trials were often pruned "
                           "looks better here than it is; the table at an early step below includes them.", "note"))
    blocks.append(Table(_headers(summary), _rows(summary, table)))
    if any(r.group == "style" and not gram_ok(r.arch) for r in table.rows):
        blocks.append(Para(GRAM_ON_RESNET, "note"))
    if isinstance(step_table, str):
        blocks.append(Para(f"Effect at an early step: {step_table}.", "note"))
        return blocks
    blocks.append(Heading(f"At step {step_table.step}, {step_table.n_trials} trials (complete and pruned)", 3))
    blocks.append(Para(
        f"The same model on the {summary.metrics[0]} every complete and pruned trial reported at evaluation step "
        f"{step_table.step} (df {step_table.df}, {_tested(step_table, 'layer')}): the evidence pruned trials "
        "carry. An early value ranks configs imperfectly, so read it beside the table above. "
        + _conclusion(step_table, label, "layer")))
    blocks.append(Table(_headers(summary), _rows(summary, step_table)))
    return blocks


def network_blocks(summary: StudySummary, table: EffectTable | None,
                   seconds: dict[str, tuple[float | None, int]]) -> list[Block]:
    """Each searched loss network against the others (only when several were searched)."""
    if table is None:
        return []
    metric = summary.metrics[0]
    rows: Sequence[NetworkEffect] = table.rows
    return [
        Heading("Per-network effect", 3),
        Para(f"Each loss network's complete trials against the others: its mean {metric} minus the average of the "
             f"other networks' means, adjusted for the non-layer searched quantities; a network is taken with the "
             f"layers the search tried on it. Same interval, minimum ({MIN_PER_SIDE} trials a side) and Holm rule "
             f"as above ({_tested(table, 'network')}). " + _conclusion(table, lambda r: r.arch, "network")),
        Table(["network", "trials", f"median {metric}", "effect vs the others", f"{LEVEL:.0%} interval",
               "p (Holm)", "verdict", "median s per trial"],
              [[r.arch, str(r.n), format_metric(metric, r.median), _effect(metric, r), _interval(metric, r),
                _p(r.p_adjusted), r.verdict,
                "n/a" if seconds.get(r.arch, (None, 0))[0] is None else f"{seconds[r.arch][0]:.3g}"]
               for r in rows]),
    ]


def layers_csv(table: EffectTable, step: bool = False) -> str:
    """layers.csv (or layers_at_step.csv with a ``step`` column): one row per candidate, empty where none."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(LAYER_COLUMNS + (["step", "n_trials"] if step else []))
    for e in table.rows:
        cells = [e.group, e.layer, e.n_with, e.n_without, e.median_with, e.median_without, e.difference, e.ci_low,
                 e.ci_high, e.better_if, e.top_uses, e.top_size, e.top_weight, e.verdict, e.arch, e.p_value,
                 e.p_adjusted]
        writer.writerow(["" if c is None else c for c in cells] + ([table.step, table.n_trials] if step else []))
    return buffer.getvalue()
