"""`layersearch report`: a finished study -> ``<studies_dir>/<name>/report/`` (index.html, report.md, PNGs,
layers.csv), written through a staging folder and renamed, then logged to the study's MLflow summary run.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial

from ..errors import ConfigValueError
from ..outputs import RANDOM_BANNER
from ..search.dashboards import ui_url
from ..search.results import NO_ESTIMATE, NOISE_ALPHA, describe, threshold
from ..search.storage import load_study, redact
from ..search.tracking import layers_label
from ..settings import ReportSettings, Settings
from ..trial.metric_registry import format_metric
from . import figures
from .best_trials import baseline_differences, pareto_front, top_trials
from .effects import EffectTable, layer_effects, network_effects, step_effects
from .importance import IMPORTANCE_METHOD, importances
from .layer_section import GRAM_ON_RESNET, effect_blocks, layers_csv, network_blocks
from .layout import Heading, Image, Link, Para, Table, render_html, render_markdown
from .places import confirm_path, inspect_dir, replace_dir, report_dir, staging_dir
from .records import StudyRuns, log_folder, trial_runs
from .study_summary import StudySummary, gram_on_resnet, self_graded, summarize_study, trial_costs, trial_name

__all__ = ["ReportResult", "build_report", "write_report"]

def labels_of(confirm_data: dict) -> dict:
    """confirm.json's config keys (``trial_12``) -> their labels (``#12 relu2_2+relu4_3``)."""
    return {c.get("key"): c.get("label") or c.get("key") for c in confirm_data.get("configs") or []}


@dataclass
class ReportResult:
    out_dir: Path
    files: list[str]
    seconds: float
    random_weights: bool
    mlflow_run: str | None = None
    notes: list[str] = field(default_factory=list)


def _fmt(value: Any, digits: int = 4) -> str:
    """A number that is not a metric value (a rank, a correlation, a p-value); metrics go through format_metric."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return str(value)


def _metrics_cells(summary: StudySummary, trial: FrozenTrial) -> list[str]:
    return [format_metric(m, v) for m, v in zip(summary.metrics, trial.values, strict=True)]


def _runs_cell(metric: str, value: float, runs: int) -> str:
    return format_metric(metric, value) + (f" (mean of {runs} seeds)" if runs > 1 else "")


def _config_label(layer_config: Mapping[str, Any]) -> str:
    return layers_label(layer_config, weights=True) + (" †" if gram_on_resnet(layer_config) else "")


class _Report:
    """Collects blocks and figures for one study; each ``section_*`` method adds one section."""

    def __init__(self, summary: StudySummary, settings: ReportSettings, studies_dir: str, folder: Path,
                 runs: StudyRuns):
        self.s, self.settings, self.studies_dir, self.folder, self.runs = summary, settings, studies_dir, folder, runs
        self.blocks: list = []
        self.files: list[str] = []

    def figure(self, name: str, draw, *args) -> None:
        draw(self.folder / name, *args)
        self.files.append(name)
        self.blocks.append(Image(name, name.removesuffix(".png").replace("_", " ")))

    def note(self, text: str) -> None:
        self.blocks.append(Para(text, "note"))

    def lpips(self) -> str | None:
        """The study's LPIPS net/weights: recorded on the study at sweep start, else the MLflow experiment tag."""
        return self.s.lpips or self.runs.tags.get("layersearch.lpips")

    def section_header(self) -> None:
        s = self.s
        if s.random_weights:
            self.blocks.append(Para(RANDOM_BANNER, "banner"))
        self.blocks.append(Heading(f"layersearch report: study {s.name}", 1))
        lpips = self.lpips() or "not recorded (no MLflow experiment for this study)"
        c = s.counts
        repeats = f" (+ {c['repeats']} baseline repeat{'s' * (c['repeats'] != 1)} with another seed)" if c.get(
            "repeats") else ""
        costs = trial_costs(s)
        rows = [["study", s.name], ["task", s.task], ["search space", s.search_space],
                ["objectives", ", ".join(f"{m} ({d})" for m, d in s.objectives)],
                ["trials", f"{c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed{repeats}"],
                ["loss network" + "s" * (len(s.archs) > 1), ", ".join(s.archs)],
                ["per-trial cost (median of complete trials)", "; ".join(
                    f"{a}: {sec:.3g} s ({n} trials)" if sec is not None else f"{a}: no complete trial"
                    for a, (sec, n) in costs.items())],
                ["loss-net weights", ", ".join(s.loss_net_weights)],
                *([["loss-network sources", "; ".join(
                    f"{a}: " + ", ".join(f"{k} {v}" for k, v in p.items()) for a, p in s.sources.items())]]
                  if s.sources else []),
                ["LPIPS (net/weights)", lpips],
                ["seed noise", self.noise_line()],
                ["random weights", "yes" if s.random_weights else "no"],
                ["written", time.strftime("%Y-%m-%d %H:%M:%S")]]
        self.blocks.append(Table(["", "this study"], rows))
        for arch in self_graded(s, self.lpips()):
            self.blocks.append(Para(
                f"Warning: the loss network {arch} is also the backbone of the LPIPS metric ({self.lpips()}). LPIPS "
                f"then rewards a loss that matches its own features, so {arch} trials look better on lpips than an "
                "independent judge would say; compare them on psnr_y / ssim_y or with another metrics.lpips.net."))

    def noise_line(self) -> str:
        """Seed noise per objective and the rule the 'better/worse' calls use, or why there is none."""
        line = describe(self.s.noise)
        if line == NO_ESTIMATE:
            return line + ": differences between single runs are shown but not called better or worse"
        limits = [f"{m} {threshold(n):.3g}" for m, n in self.s.noise.items() if threshold(n) is not None]
        return (f"{line}. Two configs are called better or worse only when their means differ by more than "
                "t x SD x sqrt(1/n_a + 1/n_b) (n runs each; t: the two-sided quantile on the SD's df), a test at "
                f"{NOISE_ALPHA:.0%} per comparison; for two single runs that is: " + ", ".join(limits))

    def section_answer(self, front: list[FrozenTrial]) -> None:
        s = self.s
        self.blocks.append(Heading("The answer"))
        title = "best config" if len(s.objectives) == 1 else f"Pareto front ({len(front)} trial{'s' * (len(front) != 1)})"
        self.blocks.append(Para(f"{title}, from the short trials of the search:"))
        self.blocks.append(Table(["trial", "layers and weights", *s.metrics],
                                 [[trial_name(t), _config_label(t.user_attrs["layer_config"]),
                                   *_metrics_cells(s, t)] for t in front]))
        if any(gram_on_resnet(t.user_attrs["layer_config"]) for t in front):
            self.note(GRAM_ON_RESNET)
        diffs = [(t, d) for t in front for d in baseline_differences(s, t)]
        if diffs:
            self.blocks.append(Para(
                "Difference from every literature baseline in the study (trial minus baseline; a baseline run with "
                "several seeds counts as the mean of its runs). Called better or worse only beyond the seed noise "
                "in the header, else within noise."))
            self.blocks.append(Table(
                ["trial", "baseline", "metric", "trial value", "baseline value", "difference", "better if", "so"],
                [[trial_name(t), d["baseline"], d["metric"], _runs_cell(d["metric"], d["value"], d["value_runs"]),
                  _runs_cell(d["metric"], d["baseline_value"], d["baseline_runs"]),
                  format_metric(d["metric"], d["difference"], signed=True), d["better_if"], d["verdict"]]
                 for t, d in diffs]))
        elif not s.baselines:
            self.note("no literature baseline completed in this study, so nothing to compare with")
        confirm = confirm_path(self.studies_dir, s.name)
        if confirm.exists():
            self.confirmed(json.loads(confirm.read_text()))
        else:
            self.note("This ranking is from short runs and is unconfirmed: short trials rank configs imperfectly. "
                      f"Retrain the top configs and the baselines longer over seeds with "
                      f"`layersearch confirm study.name={s.name}`.")

    def confirmed(self, data: Mapping[str, Any]) -> None:
        objectives = [m for m, _ in data.get("objectives", [])]
        seeds = data.get("seeds", [])
        self.blocks.append(Para(
            f"Confirmed by `layersearch confirm`: {data.get('steps')} steps, {len(seeds)} seeds {seeds}"
            + (" (RANDOM WEIGHTS)" if data.get("random_weights") else "") + "; mean ± std over seeds:"))
        rows = []
        for c in sorted(data.get("configs", []), key=lambda c: c.get("long_rank") or 1e9):
            cells = [f"{format_metric(m, c['mean'][m])} ± {c['std'][m]:.2g}" if m in c.get("mean", {}) else "n/a"
                     for m in objectives]
            primary = data.get("primary", objectives[0] if objectives else "")
            rows.append([_fmt(c.get("long_rank")), c.get("label", c.get("key")), *cells,
                         format_metric(primary, c.get("short_run", {}).get(primary)), _fmt(c.get("n_seeds"))])
        self.blocks.append(Table(["long rank", "config", *objectives, f"short run {data.get('primary')}", "seeds"],
                                 rows))
        corr = data.get("rank_correlation") or {}
        self.blocks.append(Para(
            f"Short-run vs long-run rank agreement over {corr.get('n')} configs: Spearman {_fmt(corr.get('spearman'), 3)}, "
            f"Kendall {_fmt(corr.get('kendall'), 3)}. Winner at the longer budget: "
            f"{labels_of(data).get(data.get('winner'), data.get('winner'))}."))
        race = data.get("race")
        if race:
            # confirm's race: one verdict per config on the primary objective, with the blocks it rests on.
            self.blocks.append(Para(
                f"The race on {race.get('primary')} ({race.get('blocks')} blocks, alpha {race.get('alpha')}): "
                f"{race.get('runs')} of {race.get('runs_max')} runs trained, {race.get('runs_saved')} saved by "
                "dropping configs worse than the best."))
            self.blocks.append(Table(["config", "verdict"],
                                     [[c.get("label", c.get("key")), (c.get("verdict") or {}).get("text", "")]
                                      for c in sorted(data.get("configs", []), key=lambda c: c.get("long_rank") or 1e9)]))
        comps = data.get("comparisons") or []  # confirm.json written before the race: Welch's test over seeds
        if comps:
            labels = labels_of(data)
            level = 100 * (1 - float(comps[0].get("alpha", 0.05)))  # confirm's CI is at 1 - confirm.alpha
            self.blocks.append(Table(
                ["winner", "baseline", "metric", "difference", "better if", f"{level:g}% interval", "p (Welch t)",
                 "verdict"],
                [[labels.get(c["winner"], c["winner"]), c["baseline"], c["metric"],
                  format_metric(c["metric"], c["difference"], signed=True), c["better_if"],
                  "n/a" if c.get("ci_low") is None else
                  f"[{format_metric(c['metric'], c['ci_low'])}, {format_metric(c['metric'], c['ci_high'])}]",
                  _fmt(c.get("p_value"), 3), c["verdict"]] for c in comps]))

    def section_pareto(self) -> None:
        self.blocks.append(Heading("Pareto front"))
        if len(self.s.objectives) < 2:
            self.note("single objective: there is no Pareto front (see The answer for the best trial)")
        elif len(self.s.complete) < 2:
            self.note("one complete trial: a front needs at least two to compare")
        else:
            if len(self.s.objectives) > 2:
                self.note(f"the first two of {len(self.s.objectives)} objectives")
            self.figure("pareto.png", figures.pareto_figure, self.s, self.s.metrics[:2])

    def section_history(self) -> None:
        self.blocks.append(Heading("Optimisation history"))
        self.blocks.append(Para("Each objective per trial and the best so far; dashed lines are the baselines; "
                                "x marks a pruned trial at the value of the step it stopped (@step)."))
        self.figure("history.png", figures.history_figure, self.s)

    def section_layers(self, table: EffectTable, step_table: EffectTable | str, networks: EffectTable | None
                       ) -> None:
        """Per-layer (and per-network) effects: the blocks, layers.csv, layers_at_step.csv and the chart."""
        self.blocks += effect_blocks(self.s, table, step_table)
        self.write("layers.csv", layers_csv(table))
        if isinstance(step_table, EffectTable):
            self.write("layers_at_step.csv", layers_csv(step_table, step=True))
        if any(e.difference is not None for e in table.rows):
            self.figure("layers.png", figures.layers_figure, table.rows, self.s.metrics[0], self.s.random_weights,
                        len(self.s.archs) > 1)
        self.blocks += network_blocks(self.s, networks, trial_costs(self.s))

    def write(self, name: str, text: str) -> None:
        (self.folder / name).write_text(text)
        self.files.append(name)

    def section_importance(self) -> None:
        self.blocks.append(Heading("Importance"))
        scores = importances(self.s, self.settings.seed)
        if isinstance(scores, str):
            self.note(scores)
            return
        self.blocks.append(Para(
            f"Method: {IMPORTANCE_METHOD}: the share of each objective's variance over the complete trials that a "
            "random-forest fit attributes to each searched quantity alone. It runs on derived, complete parameters (use_<layer> as "
            "0/1, log10 weights with absence one decade below the smallest, log10 content/style ratio, pixel "
            "weight, criterion, and the loss network when several were searched), so the conditional use_* flags of "
            "the search do not drop out."))
        names = list(next(iter(scores.values())))
        self.blocks.append(Table(["quantity", *scores], [[n, *(f"{scores[m].get(n, 0):.3f}" for m in scores)]
                                                          for n in names]))
        self.figure("importance.png", figures.importance_figure, scores, self.s.random_weights)

    def section_top(self) -> None:
        s = self.s
        n = self.settings.top
        port = self.settings.port or 5000  # null: the ui default
        self.blocks.append(Heading("Top trials"))
        rows = []
        for rank, t in enumerate(top_trials(s, n), start=1):
            run = self.runs.runs.get(t.number)
            link: Any = Link("run", ui_url(port, self.runs.experiment_id, run_id=run)) if run else "no run"
            rows.append([str(rank), trial_name(t), _config_label(t.user_attrs["layer_config"]),
                         *_metrics_cells(s, t), t.state.name, link])
        self.blocks.append(Table(["rank", "trial", "layers and weights", *s.metrics, "state", "MLflow"], rows))
        if self.runs.experiment_id is None:
            self.note("no MLflow experiment for this study, so no run links")
        else:
            self.note(f"links open the MLflow dashboard: `layersearch ui study.name={s.name} port={port}`")

    def section_style(self) -> None:
        s = self.s
        self.blocks.append(Heading("Style task"))
        if not s.is_style:
            self.note(f"not a style-transfer study (task {s.task}): nothing to show here")
            return
        ratios = {t.number: t.user_attrs["layer_config"]["content_weight"] / t.user_attrs["layer_config"]["style_weight"]
                  for t in s.complete if t.user_attrs["layer_config"].get("style_weight")
                  and t.user_attrs["layer_config"].get("content_weight")}
        if ratios:
            self.figure("style_ratio.png", figures.ratio_figure, s, ratios)
        else:
            self.note("no trial has both content and style terms, so there is no content/style ratio to plot")
        pair = ["content_lpips", "style_distance"]
        if all(m in s.metrics for m in pair) and len(s.complete) >= 2:
            self.figure("style_pareto.png", figures.pareto_figure, s, pair)
        else:
            self.note("content_lpips vs style_distance needs both as objectives and two complete trials")

    def section_inspect(self) -> None:
        folder = inspect_dir(self.studies_dir, self.s.name)
        self.blocks.append(Heading("What each layer keeps (layersearch inspect)"))
        if not (folder / "inspect.json").exists() or not (folder / "inspect.png").exists():
            self.note(f"no inspection yet: `layersearch inspect study.name={self.s.name}` shows what each candidate "
                      "layer keeps of an image; the report embeds the latest one")
            return
        data = json.loads((folder / "inspect.json").read_text())
        shutil.copyfile(folder / "inspect.png", self.folder / "inspect.png")
        self.files.append("inspect.png")
        self.blocks.append(Para(
            f"Feature and style reconstructions of {data.get('image')} from noise ({data.get('optimizer')}, "
            f"{data.get('steps')} steps, {data.get('written')})" + (" - RANDOM WEIGHTS" if data.get("random_weights")
                                                                   else "") + ":"))
        self.blocks.append(Image("inspect.png", "inspect grid"))
        names = data.get("metrics") or ["psnr_y", "lpips"]  # inspect.json before it listed them
        self.blocks.append(Table(
            ["layer", *(f"{kind} {m}" for kind in ("feature", "style") for m in names)],
            [[r["layer"], *(format_metric(m, r[kind].get(m)) for kind in ("feature", "style") for m in names)]
             for r in data.get("layers", [])]))


def step_share(value: float) -> float:
    """``report.step_share``, checked: a share of trials in (0, 1]."""
    try:
        share = float(value)
    except (TypeError, ValueError):
        share = math.nan
    if not 0 < share <= 1:
        raise ConfigValueError(f"report.step_share must be a number in (0, 1], got {value!r}")
    return share


def write_report(summary: StudySummary, settings: ReportSettings, studies_dir: str, out_dir: Path,
                 runs: StudyRuns) -> list[str]:
    """Render every section of ``summary`` into ``out_dir`` (which must exist); returns the files written."""
    report = _Report(summary, settings, studies_dir, out_dir, runs)
    front = pareto_front(summary)
    report.section_header()
    report.section_answer(front)
    report.section_pareto()
    report.section_history()
    report.section_layers(layer_effects(summary), step_effects(summary, step_share(settings.step_share)),
                          network_effects(summary))
    report.section_importance()
    report.section_top()
    report.section_style()
    report.section_inspect()
    (out_dir / "index.html").write_text(render_html(f"layersearch report: {summary.name}", report.blocks))
    (out_dir / "report.md").write_text(render_markdown(report.blocks))
    return ["index.html", "report.md", *report.files]


def build_report(settings: Settings) -> ReportResult:
    """Write the report of ``study.name`` and log it to MLflow; the function `layersearch report` calls.

    Raises:
        StudyError: no such study, or it has no complete trial (nothing is written).
    """
    started = time.perf_counter()
    step_share(settings.report.step_share)  # bad input fails before anything is read or written
    studies_dir = settings.paths.studies_dir
    study, url = load_study(settings.study, studies_dir)
    summary = summarize_study(study)
    uri = settings.tracking.uri
    runs = trial_runs(uri, summary.name)
    out = report_dir(studies_dir, summary.name)
    staging = staging_dir(out)
    try:
        files = write_report(summary, settings.report, studies_dir, staging, runs)
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result = ReportResult(out, files, time.perf_counter() - started, summary.random_weights)
    if settings.report.log_mlflow and runs.experiment_id is not None:
        result.mlflow_run = log_folder(uri, summary.name, out, "report", run_name="report", summary=True,
                                       random_weights=summary.random_weights)
    elif runs.experiment_id is None:
        result.notes.append(f"no MLflow experiment {summary.name!r} in {redact(uri)}: report not logged to MLflow")
    return result
