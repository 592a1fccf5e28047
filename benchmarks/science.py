"""`make bench-science`: the first findings with real features. EfficientNet-Lite0 with its real ImageNet weights
(installed with layersearch) against the same architecture with random weights, on the built-in SR x4 task at
the demo's budget (``preset=offline``: 200 Adam steps, 64 px crops, 128 px validation crops, scored by piq's
HaarPSI and PSNR-Y, nothing downloaded).

    .venv/bin/python benchmarks/science.py [--parts abc] [--seeds 3] [--trials 32] [--out FILE]

(a) **Each single stage as the loss**, with and without a pixel term (MSE, weight 1), for each weights kind,
    trained with trainer seeds 0..N-1 (the same seeds, so the same crops, for every config), plus the pixel
    loss alone. Per config: mean PSNR-Y and HaarPSI over the seeds. The noise floor is the pooled within-config
    seed SD of each metric (the estimator of ``layersearch.search.results.noise``, df = configs x (seeds - 1)).
    Each config is compared with the pixel loss by the two-sided t test of ``noise.threshold`` (its level is
    checked by simulation in tests/insight/test_noise.py); the p-values of one table are Holm-adjusted, and a
    difference is called only when its adjusted p < 0.05, else "within noise".
(b) **The demo study's answer**: ``layersearch sweep preset=offline`` (``--trials`` trials, sampler seed 0) with
    real weights and with ``loss_net.weights=random``; each study's per-layer effect table as
    ``layersearch report`` prints it (joint model, 90% interval, Holm-adjusted verdicts).

(c) **What each stage keeps**: ``layersearch inspect preset=offline`` (feature and Gram inversions of
    ``chelsea`` at 128 px from noise, L-BFGS) with real and with random weights: each reconstruction's PSNR-Y
    (colour and exact detail), SSIM-Y and HaarPSI (structure) against the photo; the two grids are copied to
    ``docs/img/inspect-lite0-imagenet.png`` and ``-random.png``.

Writes a Markdown results file (default ``benchmarks/results/<date>-vm-science.md``) that
docs/what-layers-capture.md quotes. About 30 minutes on 2 idle cores (a: ~15, b: ~10, c: ~4).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
from scipy import stats

from layersearch.config import load_settings
from layersearch.insight.effects import layer_effects
from layersearch.insight.study_summary import summarize_study
from layersearch.lossnet.loss import LossConfig, PerceptualLoss
from layersearch.trial.tasks import build_task
from layersearch.trial.train import train

STAGES = ["blocks.0", "blocks.2", "blocks.4", "blocks.10", "blocks.15"]  # conf/search_space/sr_lite0.yaml
STRIDES = {"blocks.0": 2, "blocks.2": 4, "blocks.4": 8, "blocks.10": 16, "blocks.15": 32}
METRICS = ["psnr_y", "haarpsi"]
ALPHA = 0.05


def layer_config(weights: str, stage: str | None, pixel: float) -> dict:
    return {"loss_net": {"arch": "efficientnet_lite0", "weights": weights},
            "content_layers": {stage: 1.0} if stage else {}, "style_layers": {},
            "content_weight": 1.0 if stage else 0.0, "style_weight": 0.0, "pixel_weight": pixel,
            "tv_weight": 0.0, "criterion": "mse"}


def configs() -> dict[str, dict]:
    out = {"pixel": layer_config("imagenet", None, 1.0)}
    for weights in ("imagenet", "random"):
        for stage in STAGES:
            for pixel in (0.0, 1.0):
                out[f"{weights} {stage}{' + pixel' if pixel else ''}"] = layer_config(weights, stage, pixel)
    return out


def run_stage_table(seeds: int, log) -> dict[str, list[dict[str, float]]]:
    """``{config: [scores of seed 0, 1, ...]}``, every config trained in this process on one built task."""
    settings = load_settings(["preset=offline", "trainer.progress=false"])
    task = build_task(settings.task, settings.data, settings.model, settings.metrics, "cpu",
                      settings.study.objectives)
    results: dict[str, list[dict[str, float]]] = {}
    todo = configs()
    started = time.perf_counter()
    for k, (name, mapping) in enumerate(todo.items()):
        results[name] = []
        for seed in range(seeds):
            loss = PerceptualLoss(LossConfig.from_mapping(mapping), seed=settings.seed)
            trainer = dataclasses.replace(settings.trainer, seed=seed)
            _, run = train(task, loss, trainer)
            results[name].append({m: run.metrics[m] for m in METRICS})
        mean = {m: sum(r[m] for r in results[name]) / seeds for m in METRICS}
        log(f"[{k + 1}/{len(todo)}] {name}: psnr_y {mean['psnr_y']:.2f}, haarpsi {mean['haarpsi']:.4f} "
            f"({time.perf_counter() - started:.0f} s)")
    return results


def pooled_sd(results: dict[str, list[dict[str, float]]], metric: str) -> tuple[float, int]:
    squares, df = 0.0, 0
    for runs in results.values():
        values = [r[metric] for r in runs]
        mean = sum(values) / len(values)
        squares += sum((v - mean) ** 2 for v in values)
        df += len(values) - 1
    return math.sqrt(squares / df), df


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error at most alpha under any dependence)."""
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    adjusted, running = [1.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def stage_tables(results: dict[str, list[dict[str, float]]], seeds: int) -> list[str]:
    lines = []
    noise = {m: pooled_sd(results, m) for m in METRICS}
    lines.append("Noise floor (pooled within-config seed SD): " + "; ".join(
        f"{m} {sd:.3g} (df {df}: {len(results)} configs x {seeds} seeds)" for m, (sd, df) in noise.items()))
    lines.append("")
    means = {name: {m: sum(r[m] for r in runs) / len(runs) for m in METRICS} for name, runs in results.items()}
    # Each config against the pixel loss, one family per metric (Holm over its rows).
    verdicts: dict[tuple[str, str], str] = {}
    for m in METRICS:
        sd, df = noise[m]
        names = [n for n in results if n != "pixel"]
        diffs = [means[n][m] - means["pixel"][m] for n in names]
        se = sd * math.sqrt(2 / seeds)
        p = [2 * float(stats.t.sf(abs(d) / se, df)) for d in diffs]
        for n, d, q in zip(names, diffs, holm(p), strict=True):
            verdicts[(n, m)] = (("better" if d > 0 else "worse") if q < ALPHA else "within noise") + f" (p_Holm {q:.2g})"
    header = "| loss | stride | PSNR-Y (dB) | vs pixel | HaarPSI | vs pixel |"
    lines += [header, "|---|---|---|---|---|---|"]
    pm = means["pixel"]
    lines.append(f"| pixel (MSE) | - | {pm['psnr_y']:.2f} | - | {pm['haarpsi']:.4f} | - |")
    for name in results:
        if name == "pixel":
            continue
        stage = name.split()[1]
        row = means[name]
        lines.append(f"| {name} | /{STRIDES[stage]} | {row['psnr_y']:.2f} | {row['psnr_y'] - pm['psnr_y']:+.2f}: "
                     f"{verdicts[(name, 'psnr_y')]} | {row['haarpsi']:.4f} | {row['haarpsi'] - pm['haarpsi']:+.4f}: "
                     f"{verdicts[(name, 'haarpsi')]} |")
    return lines


def run_study(weights: str, trials: int, root: Path, log) -> optuna.Study:
    name = f"science_{weights}"
    args = [sys.executable, "-m", "layersearch.cli", "sweep", "preset=offline", f"study.name={name}",
            f"study.n_trials={trials}", f"paths.studies_dir={root}", f"paths.outputs_dir={root / 'outputs'}",
            "trainer.progress=false"]
    if weights == "random":
        args.append("loss_net.weights=random")
    started = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    log(f"study {name}: {time.perf_counter() - started:.0f} s")
    return optuna.load_study(study_name=name, storage=f"sqlite:///{root}/{name}/optuna.db")


def effect_lines(study: optuna.Study) -> list[str]:
    table = layer_effects(summarize_study(study))
    lines = ["| layer | trials with / without | effect on haarpsi (90% interval) | p (Holm) | verdict |",
             "|---|---|---|---|---|"]
    for e in table.rows:
        estimate = (f"{e.difference:+.4f} ({e.ci_low:+.4f}, {e.ci_high:+.4f})" if e.difference is not None
                    else e.note or "-")
        p = f"{e.p_adjusted:.2g}" if e.p_adjusted is not None else "-"
        lines.append(f"| {e.group}:{e.layer} | {e.n_with} / {e.n_without} | {estimate} | {p} | {e.verdict} |")
    return lines


def run_inspect(weights: str, root: Path, log) -> dict:
    out = root / f"inspect_{weights}"
    args = [sys.executable, "-m", "layersearch.cli", "inspect", "preset=offline", f"out_dir={out}",
            f"paths.studies_dir={root}", f"paths.outputs_dir={root / 'outputs'}"]
    if weights == "random":
        args.append("loss_net.weights=random")
    started = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    log(f"inspect {weights}: {time.perf_counter() - started:.0f} s")
    image = Path("docs/img") / f"inspect-lite0-{weights}.png"
    image.write_bytes((out / "inspect.png").read_bytes())
    return json.loads((out / "inspect.json").read_text())


def inspect_lines(real: dict, random: dict) -> list[str]:
    names = real["metrics"]
    lines = ["| stage | stride | " + " | ".join(f"feature {m}: real / random" for m in names) + " | "
             + " | ".join(f"style {m}: real / random" for m in names) + " |",
             "|---|---|" + "---|" * (2 * len(names))]
    for a, b in zip(real["layers"], random["layers"], strict=True):
        cells = [f"{a[kind][m]:.{2 if m == 'psnr_y' else 3}f} / {b[kind][m]:.{2 if m == 'psnr_y' else 3}f}"
                 for kind in ("feature", "style") for m in names]
        lines.append(f"| {a['layer']} | /{a['stride']} | " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--parts", default="abc", help="which parts to run: a, b, c or any mix (default abc)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results") / f"{time.strftime('%Y-%m-%d')}-vm-science.md")
    args = parser.parse_args()
    if args.seeds < 2:
        parser.error("--seeds must be >= 2: the noise floor needs repeats")
    torch.set_num_threads(max(1, torch.get_num_threads()))

    def log(line: str) -> None:
        print(line, flush=True)

    started = time.perf_counter()
    out = ["# Real vs random EfficientNet-Lite0 features on SR x4 (`make bench-science`)", "",
           f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
           f"{torch.__version__}; started {time.strftime('%Y-%m-%d %H:%M')}. Task: `preset=offline` (SR x4, "
           "200 Adam steps, 64 px crops, batch 4, 3 validation photos at 128 px; PSNR-Y and HaarPSI with a 4 px "
           "shave). Random weights: one draw (loss-network seed 0), the same for every run."]
    def save() -> None:  # after each part: a late failure keeps what was measured
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(out) + "\n")

    if "a" in args.parts:
        out += ["", f"## (a) Each stage as the loss, {args.seeds} trainer seeds each (seeds 0..{args.seeds - 1})", ""]
        results = run_stage_table(args.seeds, log)
        out += stage_tables(results, args.seeds)
        out += ["", "Per-seed values:", "", "| loss | " + " | ".join(f"seed {s} PSNR-Y / HaarPSI"
                                                                    for s in range(args.seeds)) + " |",
                "|---|" + "---|" * args.seeds]
        for name, runs in results.items():
            out.append(f"| {name} | " + " | ".join(f"{r['psnr_y']:.2f} / {r['haarpsi']:.4f}" for r in runs) + " |")
        save()
    if "c" in args.parts:
        with tempfile.TemporaryDirectory() as tmp:
            real, random = (run_inspect(w, Path(tmp), log) for w in ("imagenet", "random"))
        out += ["", "## (c) What each stage keeps: inversions of chelsea from noise, real / random weights", "",
                f"`layersearch inspect preset=offline [loss_net.weights=random]`: {real['size']} px, L-BFGS "
                f"{real['steps']} evaluations, TV {real['tv_weight']:g}, start noise seed {real['seed']}. Feature: "
                "the image whose features at that stage match the photo's; style: whose Gram matrices at every "
                "stage up to it match. Grids: docs/img/inspect-lite0-imagenet.png, -random.png.", ""]
        out += inspect_lines(real, random)
        save()
    if "b" in args.parts:
        with tempfile.TemporaryDirectory() as tmp:
            for weights in ("imagenet", "random"):
                study = run_study(weights, args.trials, Path(tmp), log)
                complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
                out += ["", f"## (b) The demo study with {weights} weights: per-layer effects", "",
                        f"`layersearch sweep preset=offline study.n_trials={args.trials}"
                        f"{' loss_net.weights=random' if weights == 'random' else ''}`: {len(complete)} complete "
                        f"trials of {len(study.trials)} (the rest pruned; the table uses complete first runs). "
                        "Effect = the joint model's estimate of using the layer (with - without), higher is "
                        "better for haarpsi.", ""]
                out += effect_lines(study)
                save()
    out += ["", f"Total {time.perf_counter() - started:.0f} s."]
    save()
    print("\n".join(out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
