"""`layersearch report`: a finished study -> ``<studies_dir>/<name>/report/`` (index.html, report.md, PNGs,
layers.csv), written through a staging folder and renamed, then logged to the study's MLflow summary run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial

from ..outputs import RANDOM_BANNER
from ..search.storage import load_study, redact
from ..search.tracking import ui_url
from . import figures
from .analysis import (
    IMPORTANCE_METHOD,
    LayerEffect,
    StudySummary,
    baseline_differences,
    importances,
    layer_effects,
    layers_label,
    pareto_front,
    summarize_study,
    top_trials,
    trial_name,
)
from .layout import Heading, Image, Link, Para, Table, render_html, render_markdown
from .places import confirm_path, inspect_dir, replace_dir, report_dir, staging_dir
from .records import StudyRuns, log_folder, trial_runs

__all__ = ["ReportResult", "build_report", "write_report"]

LAYER_COLUMNS = ["group", "layer", "n_with", "n_without", "median_with", "median_without", "difference",
                 "ci90_low", "ci90_high", "better_if", "top_decile_uses", "top_decile_size", "top_decile_median_weight"]


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
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return str(value)


def _signed(value: float) -> str:
    return f"{value:+.4g}"


def _metrics_cells(summary: StudySummary, trial: FrozenTrial) -> list[str]:
    return [_fmt(v) for v in trial.values]


class _Report:
    """Collects blocks and figures for one study; each ``section_*`` method adds one section."""

    def __init__(self, summary: StudySummary, cfg: Mapping[str, Any], folder: Path, runs: StudyRuns):
        self.s, self.cfg, self.folder, self.runs = summary, cfg, folder, runs
        self.blocks: list = []
        self.files: list[str] = []
        self.report_cfg = cfg.get("report") or {}

    def figure(self, name: str, draw, *args) -> None:
        draw(self.folder / name, *args)
        self.files.append(name)
        self.blocks.append(Image(name, name.removesuffix(".png").replace("_", " ")))

    def note(self, text: str) -> None:
        self.blocks.append(Para(text, "note"))

    def section_header(self) -> None:
        s = self.s
        if s.random_weights:
            self.blocks.append(Para(RANDOM_BANNER, "banner"))
        self.blocks.append(Heading(f"layersearch report: study {s.name}", 1))
        lpips = self.runs.tags.get("layersearch.lpips", "not recorded (no MLflow experiment for this study)")
        c = s.counts
        rows = [["study", s.name], ["task", s.task], ["search space", s.search_space],
                ["objectives", ", ".join(f"{m} ({d})" for m, d in s.objectives)],
                ["trials", f"{c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed"],
                ["loss-net weights", ", ".join(s.loss_net_weights)], ["LPIPS (net/weights)", lpips],
                ["random weights", "yes" if s.random_weights else "no"],
                ["written", time.strftime("%Y-%m-%d %H:%M:%S")]]
        self.blocks.append(Table(["", "this study"], rows))

    def section_answer(self, front: list[FrozenTrial]) -> None:
        s = self.s
        self.blocks.append(Heading("The answer"))
        title = "best config" if len(s.objectives) == 1 else f"Pareto front ({len(front)} trial{'s' * (len(front) != 1)})"
        self.blocks.append(Para(f"{title}, from the short trials of the search:"))
        self.blocks.append(Table(["trial", "layers and weights", *s.metrics],
                                 [[trial_name(t), layers_label(t.user_attrs["layer_config"]),
                                   *_metrics_cells(s, t)] for t in front]))
        diffs = [(t, d) for t in front for d in baseline_differences(s, t)]
        if diffs:
            self.blocks.append(Para("Difference from every literature baseline in the study (trial minus baseline):"))
            self.blocks.append(Table(["trial", "baseline", "metric", "difference", "better if", "so"],
                                     [[trial_name(t), d["baseline"], d["metric"], _signed(d["difference"]),
                                       d["better_if"], d["verdict"]] for t, d in diffs]))
        elif not s.baselines:
            self.note("no literature baseline completed in this study, so nothing to compare with")
        confirm = confirm_path(self.cfg["paths"]["studies_dir"], s.name)
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
            cells = [f"{c['mean'][m]:.4g} ± {c['std'][m]:.2g}" if m in c.get("mean", {}) else "n/a" for m in objectives]
            rows.append([_fmt(c.get("long_rank")), c.get("label", c.get("key")), *cells,
                         _fmt(c.get("short_run", {}).get(data.get("primary", objectives[0] if objectives else ""))),
                         _fmt(c.get("n_seeds"))])
        self.blocks.append(Table(["long rank", "config", *objectives, f"short run {data.get('primary')}", "seeds"],
                                 rows))
        corr = data.get("rank_correlation") or {}
        self.blocks.append(Para(
            f"Short-run vs long-run rank agreement over {corr.get('n')} configs: Spearman {_fmt(corr.get('spearman'), 3)}, "
            f"Kendall {_fmt(corr.get('kendall'), 3)}. Winner at the longer budget: "
            f"{labels_of(data).get(data.get('winner'), data.get('winner'))}."))
        comps = data.get("comparisons") or []
        if comps:
            labels = labels_of(data)
            level = 100 * (1 - float(comps[0].get("alpha", 0.05)))  # confirm's CI is at 1 - confirm.alpha
            self.blocks.append(Table(
                ["winner", "baseline", "metric", "difference", "better if", f"{level:g}% interval", "p (Welch t)",
                 "verdict"],
                [[labels.get(c["winner"], c["winner"]), c["baseline"], c["metric"], _signed(c["difference"]),
                  c["better_if"],
                  "n/a" if c.get("ci_low") is None else f"[{c['ci_low']:.4g}, {c['ci_high']:.4g}]",
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

    def section_layers(self, effects: list[LayerEffect]) -> None:
        metric = self.s.metrics[0]
        self.blocks.append(Heading("Per-layer effect"))
        self.blocks.append(Para(
            f"For each candidate layer, the complete trials that used it vs those that did not, on the primary "
            f"objective {metric}: difference of medians (with - without) and its seeded bootstrap 90% interval; "
            f"an interval that excludes 0 is marked *. Top-decile weight: the median weight of the layer among the "
            f"best 10% of trials that used it. Read from each trial's layer config, so it is right for every space. "
            f"Largest effect first. Also in layers.csv."))
        rows = [[e.layer + ("" if e.group == "content" else " (style)"), f"{e.n_with}/{e.n_without}",
                 _fmt(e.median_with), _fmt(e.median_without),
                 "n/a" if e.difference is None else _signed(e.difference) + (" *" if e.excludes_zero else ""),
                 "n/a (< 2 trials on a side)" if e.ci_low is None else f"[{e.ci_low:+.4g}, {e.ci_high:+.4g}]",
                 {True: "helps", False: "hurts", None: "unclear"}[e.helps],
                 f"{e.top_uses}/{e.top_size}", _fmt(e.top_weight, 3)] for e in effects]
        self.blocks.append(Table(["layer", "trials with/without", f"median {metric} with", "without",
                                  f"difference ({effects[0].better_if if effects else 'lower'} better)",
                                  "90% interval", "so", "top decile uses", "top-decile weight"], rows))
        if len(self.s.complete) < 4:
            self.note(f"{len(self.s.complete)} complete trial(s): the differences cannot be trusted yet")
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(LAYER_COLUMNS)
        for e in effects:
            writer.writerow([e.group, e.layer, e.n_with, e.n_without, e.median_with, e.median_without, e.difference,
                             e.ci_low, e.ci_high, e.better_if, e.top_uses, e.top_size, e.top_weight])
        (self.folder / "layers.csv").write_text(buffer.getvalue())
        self.files.append("layers.csv")
        if any(e.difference is not None for e in effects):
            self.figure("layers.png", figures.layers_figure, effects, metric, self.s.random_weights)

    def section_importance(self) -> None:
        self.blocks.append(Heading("Importance"))
        scores = importances(self.s, int(self.report_cfg.get("seed", 0)))
        if isinstance(scores, str):
            self.note(scores)
            return
        self.blocks.append(Para(
            f"Method: {IMPORTANCE_METHOD}: the share of each objective's variance over the complete trials that a "
            "random-forest fit attributes to each searched quantity alone. It runs on derived, complete parameters (use_<layer> as "
            "0/1, log10 weights with absence one decade below the smallest, log10 content/style ratio, pixel "
            "weight, criterion), so the conditional use_* flags of the search do not drop out."))
        names = list(next(iter(scores.values())))
        self.blocks.append(Table(["quantity", *scores], [[n, *(f"{scores[m].get(n, 0):.3f}" for m in scores)]
                                                          for n in names]))
        self.figure("importance.png", figures.importance_figure, scores, self.s.random_weights)

    def section_top(self) -> None:
        s = self.s
        n = int(self.report_cfg.get("top", 10))
        port = int(self.report_cfg.get("port") or 5000)  # null: the ui default
        self.blocks.append(Heading("Top trials"))
        rows = []
        for rank, t in enumerate(top_trials(s, n), start=1):
            run = self.runs.runs.get(t.number)
            link: Any = Link("run", ui_url(port, self.runs.experiment_id, run_id=run)) if run else "no run"
            rows.append([str(rank), trial_name(t), layers_label(t.user_attrs["layer_config"]), *_metrics_cells(s, t),
                         t.state.name, link])
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
        folder = inspect_dir(self.cfg["paths"]["studies_dir"], self.s.name)
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
        self.blocks.append(Table(
            ["layer", "feature PSNR-Y", "feature LPIPS", "style PSNR-Y", "style LPIPS"],
            [[r["layer"], _fmt(r["feature"]["psnr_y"]), _fmt(r["feature"]["lpips"]), _fmt(r["style"]["psnr_y"]),
              _fmt(r["style"]["lpips"])] for r in data.get("layers", [])]))


def write_report(summary: StudySummary, cfg: Mapping[str, Any], out_dir: Path, runs: StudyRuns) -> list[str]:
    """Render every section of ``summary`` into ``out_dir`` (which must exist); returns the files written."""
    report = _Report(summary, cfg, out_dir, runs)
    report_cfg = cfg.get("report") or {}
    front = pareto_front(summary)
    report.section_header()
    report.section_answer(front)
    report.section_pareto()
    report.section_history()
    report.section_layers(layer_effects(summary, int(report_cfg.get("bootstrap", 2000)),
                                        int(report_cfg.get("seed", 0))))
    report.section_importance()
    report.section_top()
    report.section_style()
    report.section_inspect()
    (out_dir / "index.html").write_text(render_html(f"layersearch report: {summary.name}", report.blocks))
    (out_dir / "report.md").write_text(render_markdown(report.blocks))
    return ["index.html", "report.md", *report.files]


def build_report(cfg: Mapping[str, Any]) -> ReportResult:
    """Write the report of ``cfg['study']['name']`` and log it to MLflow; the function `layersearch report` calls.

    Raises:
        StudyError: no such study, or it has no complete trial (nothing is written).
    """
    started = time.perf_counter()
    studies_dir = cfg["paths"]["studies_dir"]
    study, url = load_study(cfg["study"], studies_dir)
    summary = summarize_study(study)
    uri = str(cfg["tracking"]["uri"])
    runs = trial_runs(uri, summary.name)
    out = report_dir(studies_dir, summary.name)
    staging = staging_dir(out)
    try:
        files = write_report(summary, cfg, staging, runs)
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result = ReportResult(out, files, time.perf_counter() - started, summary.random_weights)
    if (cfg.get("report") or {}).get("log_mlflow", True) and runs.experiment_id is not None:
        result.mlflow_run = log_folder(uri, summary.name, out, "report", run_name="report", summary=True,
                                       random_weights=summary.random_weights)
    elif runs.experiment_id is None:
        result.notes.append(f"no MLflow experiment {summary.name!r} in {redact(uri)}: report not logged to MLflow")
    return result
