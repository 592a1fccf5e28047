"""`make bench`: the loss and trial hot paths against references, measured in ONE run on this machine.

    .venv/bin/python benchmarks/bench.py [--repeats 7] [--device auto] [--save] [--dry]

Prints (and with ``--save`` writes to ``benchmarks/results/<date>-<machine>.md``):

1. the machine's convolution throughput (a fixed 3x3 conv workload, GFLOP/s), measured first;
2. each loss step (output forward + backward, target forward) against the reference loss users would
   otherwise write (``references.py``: pytorch/examples fast_neural_style, BasicSR), as a ratio of median
   times over interleaved repetitions (ours, reference, ours, reference, ...: machine load hits both
   alike), with FLOPs counted by ``torch.utils.flop_counter`` and each step's rate as % of (1);
3. peak memory of each loss step, measured in a fresh subprocess per configuration (CPU: the kernel's
   peak resident set over one step, ``/proc/self/status``; CUDA: ``torch.cuda.max_memory_allocated``);
4. a quickstart SR trial step broken down (data, generator forward/backward, loss forward/backward,
   optimizer) and the evaluations' share of a quickstart trial;
5. the share of a small sweep's wall time spent outside training and evaluation (Optuna, MLflow, setup);
6. a loss step on every loss network at its deepest stride-8 layer relative to VGG-16 relu2_2, its FLOPs,
   peak memory and first build time (``networks.py``);
7. a network declared with ``module:`` (forward hooks) against the same network cut by the built-in path,
   same weights, as a ratio (``declared.py``; goal >= 0.9).

Weights are random everywhere: timing does not depend on them, and every number here is a time or a
ratio, never a quality score. ``--dry`` runs every section at a toy size (a test runs it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from declared import declared_steps, declared_table
from networks import mid_layer, network_loss, network_steps, network_table
from references import Vgg16Slices, Vgg19To, gram_matrix, normalize_batch
from torch.utils.flop_counter import FlopCounterMode

from layersearch.config import load_settings
from layersearch.lossnet.features import FeatureExtractor
from layersearch.lossnet.layers import ARCHS, layer_table
from layersearch.lossnet.loss import LossConfig, PerceptualLoss, total_variation
from layersearch.lossnet.weights import RandomWeightsWarning, shared_features
from layersearch.trial.tasks import build_task
from layersearch.trial.train import precision_used, resolve_device

ROOT = Path(__file__).resolve().parent.parent
RANDOM = {"arch": "vgg16", "weights": "random"}

# name -> (our layer config, what the reference computes). Each reference computes the same loss value.
LOSSES: dict[str, dict] = {
    "relu2_2 (Johnson SR)": {"loss_net": RANDOM, "content_layers": {"relu2_2": 1.0}},
    "relu2_2 + relu4_3": {"loss_net": RANDOM, "content_layers": {"relu2_2": 1.0, "relu4_3": 1.0}},
    "Johnson style (Gram)": {
        "loss_net": RANDOM, "content_layers": {"relu3_3": 1.0},
        "style_layers": {"relu1_2": 1.0, "relu2_2": 1.0, "relu3_3": 1.0, "relu4_3": 1.0},
        "style_weight": 1.0e4, "tv_weight": 1.0e-5,
    },
    "ESRGAN conv5_4 (VGG-19)": {"loss_net": {"arch": "vgg19", "weights": "random"},
                                "content_layers": {"conv5_4": 1.0}, "criterion": "l1"},
}
REFERENCE_NAMES = {
    "relu2_2 (Johnson SR)": "pytorch/examples Vgg16, 4 slices",
    "relu2_2 + relu4_3": "pytorch/examples Vgg16, 4 slices",
    "Johnson style (Gram)": "pytorch/examples Vgg16 + gram_matrix",
    "ESRGAN conv5_4 (VGG-19)": "BasicSR VGGFeatureExtractor to conv5_4",
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


# --- 1. the machine -------------------------------------------------------------------------------------


def conv_workload(device: torch.device, dry: bool) -> tuple[Callable[[], object], float]:
    """A fixed 3x3 convolution (128 -> 128 channels, batch 8 at 48 x 48, fp32, channels_last) and its FLOPs.

    VGG's second block at a 96 px input: the machine's conv throughput is its FLOPs over its time, timed
    interleaved with the loss steps so that it sees the same machine load.
    """
    size = 12 if dry else 48
    conv = torch.nn.Conv2d(128, 128, 3, padding=1).to(device, memory_format=torch.channels_last).requires_grad_(False)
    x = torch.rand(8, 128, size, size, device=device).contiguous(memory_format=torch.channels_last)
    with FlopCounterMode(display=False) as counter:
        conv(x)
    return (lambda: conv(x)), counter.get_total_flops()


# --- 2. loss steps vs references ------------------------------------------------------------------------


def _reference_step(name: str, ours: PerceptualLoss, device: torch.device) -> Callable:
    """A function (output, target) -> loss computing ``name``'s loss the reference way, same weights."""
    cfg = ours.config
    # The whole network the extractor was cut from: the very same (random) weights, in torchvision's layout.
    shared = shared_features(cfg.arch, cfg.weights, 0)
    state = {k.removeprefix("features."): v.contiguous() for k, v in shared.items()}
    if cfg.arch == "vgg19":
        names = [info.name for info in layer_table("vgg19")]
        net = Vgg19To(state, list(cfg.content_layers), names).to(device)

        def step(output, target):
            x_features = net(output)
            gt_features = net(target.detach())
            return sum(F.l1_loss(x_features[k], gt_features[k]) * w for k, w in cfg.content_layers.items())

        return step
    vgg = Vgg16Slices(state).to(device)
    style_grams = None
    if cfg.style_layers:
        with torch.no_grad():
            features_style = vgg(normalize_batch(STYLE.to(device)))
            style_grams = {name: gram_matrix(getattr(features_style, name)) for name in cfg.style_layers}

    def step(output, target):
        features_y = vgg(normalize_batch(output))
        features_x = vgg(normalize_batch(target))
        loss = 0.0
        for name, w in cfg.content_layers.items():
            loss = loss + cfg.content_weight * w * F.mse_loss(getattr(features_y, name), getattr(features_x, name))
        for name, w in cfg.style_layers.items():
            gm_y = gram_matrix(getattr(features_y, name))
            # pytorch/examples uses mse_loss of the Grams; ours is the squared Frobenius distance, the same
            # up to the constant C*C, so the reference's term is scaled to compute the same value.
            c = gm_y.shape[-1]
            loss = loss + cfg.style_weight * w * c * c * F.mse_loss(gm_y, style_grams[name].expand_as(gm_y))
        if cfg.tv_weight:
            loss = loss + cfg.tv_weight * total_variation(output)
        return loss

    return step


STYLE = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(2))


def loss_pair(name: str, device: torch.device):
    ours = PerceptualLoss(LossConfig.from_mapping(LOSSES[name])).to(device)
    if ours.config.style_layers:
        ours.set_style_target(STYLE.to(device))
    return ours, _reference_step(name, ours, device)


def inputs(device: torch.device, dry: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    size = 32 if dry else 96
    return (torch.rand(8, 3, size, size, generator=g).to(device), torch.rand(8, 3, size, size, generator=g).to(device))


def one_step(loss_fn: Callable, output: torch.Tensor, target: torch.Tensor) -> float:
    out = output.clone().requires_grad_(True)
    loss = loss_fn(out, target)
    loss.backward()
    return float(loss.detach())


def loss_steps(device: torch.device, dry: bool, repeats: int) -> tuple[float, list[dict]]:
    """(machine conv GFLOP/s, one row per loss): every repeat times the conv workload, ours, the reference."""
    rows = []
    output, target = inputs(device, dry)
    conv, conv_flops = conv_workload(device, dry)
    conv()
    conv_times: list[float] = []
    for name in LOSSES:
        ours, reference = loss_pair(name, device)
        sides = {"ours": ours, "reference": reference}
        values = {side: one_step(fn, output, target) for side, fn in sides.items()}  # also warms up
        flops = {}
        for side, fn in sides.items():
            with FlopCounterMode(display=False) as counter:
                one_step(fn, output, target)
            flops[side] = counter.get_total_flops()
        times: dict[str, list[float]] = {side: [] for side in sides}
        for _ in range(repeats):
            conv_times.append(timed(conv, device))
            for side, fn in sides.items():
                times[side].append(timed(lambda fn=fn: one_step(fn, output, target), device))
        median = {side: statistics.median(t) for side, t in times.items()}
        rows.append({
            "loss": name, "reference": REFERENCE_NAMES[name],
            "same_value": abs(values["ours"] - values["reference"]) <= 1e-3 * max(1.0, abs(values["reference"])),
            "ours_s": median["ours"], "reference_s": median["reference"],
            "ratio": median["reference"] / median["ours"],
            "ratio_min": min(times["reference"]) / max(times["ours"]),
            "ours_gflop": flops["ours"] / 1e9, "reference_gflop": flops["reference"] / 1e9,
            "ours_gflops": flops["ours"] / median["ours"] / 1e9,
            "reference_gflops": flops["reference"] / median["reference"] / 1e9,
        })
        del ours, reference, sides
    return conv_flops / statistics.median(conv_times) / 1e9, rows


# --- 3. peak memory, one subprocess per configuration ----------------------------------------------------


def memory_child(name: str, side: str, device_name: str, dry: bool) -> None:
    """Run in a fresh process: print the peak memory one loss step adds, in MiB, as JSON."""
    warnings.simplefilter("ignore", RandomWeightsWarning)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    device = torch.device(device_name)
    if side == "network":  # section 6: name is a network
        fn = network_loss(name, mid_layer(name), device)
    else:
        ours, reference = loss_pair(name, device)
        fn = ours if side == "ours" else reference
    output, target = inputs(device, dry)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        one_step(fn, output, target)
        peak = torch.cuda.max_memory_allocated() - base
    else:
        # The parent sets MALLOC_MMAP_THRESHOLD_ so that freed tensors go back to the OS and the resident set
        # follows live memory; the kernel's peak (VmHWM) is reset after a warm-up step, then one step runs.
        one_step(fn, output, target)
        Path("/proc/self/clear_refs").write_text("5")
        base = _status_kib("VmRSS")
        one_step(fn, output, target)
        peak = (_status_kib("VmHWM") - base) * 1024
    print(json.dumps({"mib": peak / 2**20}))


def _status_kib(field: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1])


def child_peak(name: str, side: str, device: torch.device, dry: bool) -> float:
    """Peak MiB of one loss step of ``name`` (a loss of LOSSES, or a network with side ``network``), fresh process."""
    proc = subprocess.run(
        [sys.executable, __file__, "--memory-child", name, side, "--device", str(device), *(["--dry"] if dry else [])],
        capture_output=True, text=True, check=True,
        env={**os.environ, "BENCH_THREADS": str(torch.get_num_threads()), "MALLOC_MMAP_THRESHOLD_": "131072"},
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])["mib"]


def peak_memory(device: torch.device, dry: bool) -> dict[tuple[str, str], float]:
    return {(name, side): child_peak(name, side, device, dry) for name in LOSSES for side in ("ours", "reference")}


# --- 4. a quickstart trial step, broken down ------------------------------------------------------------


def quickstart_config(dry: bool, *extra: str):
    overrides = ["preset=quickstart", "loss_net.weights=random", "metrics.lpips.weights=random", *extra]
    if dry:
        overrides += ["task.crop=32", "task.val_crop=64", "model.channels=8", "model.n_blocks=1"]
    return load_settings(overrides)


def trial_breakdown(device: torch.device, dry: bool, repeats: int) -> dict:
    """Seconds per phase of one training step of the quickstart relu2_2 trial, and the evaluations' share."""
    cfg = quickstart_config(dry)
    task = build_task(cfg.task, cfg.data, cfg.model, cfg.metrics, device)
    loss_fn = PerceptualLoss(LossConfig.from_mapping({"loss_net": RANDOM, "content_layers": {"relu2_2": 1.0}}))
    loss_fn.to(device)
    # The precision and layout train() picks for this device (trainer.precision / channels_last = auto).
    bf16 = precision_used(cfg.trainer, device) == "bf16"
    memory_format = torch.channels_last if bf16 or device.type == "cuda" else torch.contiguous_format
    torch.manual_seed(0)
    model = task.build_generator().to(memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.trainer.lr)
    batches = torch.Generator().manual_seed(0)
    batch = cfg.trainer.batch_size
    phases: dict[str, list[float]] = {p: [] for p in ("data", "generator fwd", "loss fwd", "loss bwd",
                                                      "generator bwd", "optimizer")}
    n_steps = 3 if dry else 10 * repeats
    for step in range(n_steps + 2):
        t = {}
        t0 = time.perf_counter()
        lr, hr = task.sample_batch(batch, batches)
        lr = lr.contiguous(memory_format=memory_format)
        sync(device)
        t["data"] = time.perf_counter()
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            out = model(lr)
        sync(device)
        t["generator fwd"] = time.perf_counter()
        # Cut the graph at the generator's output so that the loss network's backward is timed alone.
        cut = out.detach().requires_grad_(True)
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            loss = task.loss(loss_fn, cut, hr)
        sync(device)
        t["loss fwd"] = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sync(device)
        t["loss bwd"] = time.perf_counter()
        out.backward(cut.grad)
        sync(device)
        t["generator bwd"] = time.perf_counter()
        optimizer.step()
        sync(device)
        t["optimizer"] = time.perf_counter()
        if step >= 2:  # the first steps allocate
            previous = t0
            for phase, stamp in t.items():
                phases[phase].append(stamp - previous)
                previous = stamp
    # What a trial's loss costs to build: the first extractor of a process initialises (or reads) the
    # weights, later ones share them (a sweep builds one per trial).
    builds = []
    for _ in range(3):
        start = time.perf_counter()
        extractor = FeatureExtractor("vgg16", ["relu5_3"], "random", seed=12345)
        builds.append(time.perf_counter() - start)
    shared = extractor.body[0].weight.data_ptr() == FeatureExtractor("vgg16", ["relu1_2"], "random",
                                                                     seed=12345).body[0].weight.data_ptr()
    medians = {p: statistics.median(v) for p, v in phases.items()}
    step_s = sum(medians.values())
    eval_s = statistics.median(timed(lambda: task.evaluate(model), device) for _ in range(3))
    steps, every = cfg.trainer.steps, cfg.trainer.eval_every
    n_evals = -(-steps // every)
    return {"precision": "bf16" if bf16 else "fp32", "phases": medians, "step_s": step_s, "build_s": builds, "shared": shared, "eval_s": eval_s, "steps": steps, "n_evals": n_evals,
            "eval_share": n_evals * eval_s / (n_evals * eval_s + steps * step_s)}


# --- 5. a small sweep: time outside training -----------------------------------------------------------


def sweep_overhead(dry: bool) -> dict:
    from layersearch.search import run_sweep

    with tempfile.TemporaryDirectory() as tmp:
        steps = "trainer.steps=4" if dry else "trainer.steps=20"
        cfg = quickstart_config(
            dry, f"paths.studies_dir={tmp}/studies", f"tracking.uri=sqlite:///{tmp}/mlflow.db",
            "study.name=bench", "study.n_trials=2" if dry else "study.n_trials=3", steps,
            "trainer.eval_every=2" if dry else "trainer.eval_every=10", "trainer.progress=false",
            "trainer.device=cpu",
        )
        start = time.perf_counter()
        result = run_sweep(cfg)
        wall = time.perf_counter() - start
    return {"trials": result.ran_trials, "steps": cfg.trainer.steps, "wall_s": wall,
            "training_s": result.seconds_in_training, "outside_share": 1 - result.seconds_in_training / wall}


# --- report --------------------------------------------------------------------------------------------


def machine_line(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (f"{platform.node()}: {cpu}{gpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch threads, device {device}")


def git_commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return proc.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def report(args: argparse.Namespace, device: torch.device) -> str:
    load_before = os.getloadavg()
    started = time.perf_counter()
    lines: list[str] = []

    def out(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    out(f"# make bench: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {git_commit()}")
    out()
    out(f"Machine: {machine_line(device)}. Load average before: {load_before[0]:.2f} (1 min).")
    out("Weights: RANDOM (timing does not depend on them). Times are medians of interleaved repeats.")
    if args.dry:
        out("DRY RUN: toy sizes, the numbers mean nothing.")
    out()
    gflops, rows = loss_steps(device, args.dry, args.repeats)
    out("## 1. Machine convolution throughput")
    out()
    out(f"3x3 conv 128->128 ch, batch 8 at 48x48 (VGG's 2nd block at 96 px), fp32, channels_last, timed between the "
        f"loss steps below: **{gflops:.1f} GFLOP/s** (the 100% of section 2).")
    out()
    size = 32 if args.dry else 96
    out(f"## 2. Loss step vs reference (batch 8 at {size}x{size}: output fwd+bwd, target fwd)")
    out()
    out("| loss | reference | ours s | ref s | **ratio** (ref/ours) | worst-case ratio | ours GFLOP | ref GFLOP "
        "| ours % of conv peak | ref % | same value |")
    out("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        out(f"| {r['loss']} | {r['reference']} | {r['ours_s']:.4f} | {r['reference_s']:.4f} | **{r['ratio']:.2f}x** "
            f"| {r['ratio_min']:.2f}x | {r['ours_gflop']:.2f} | {r['reference_gflop']:.2f} "
            f"| {100 * r['ours_gflops'] / gflops:.0f}% | {100 * r['reference_gflops'] / gflops:.0f}% | {'yes' if r['same_value'] else 'NO'} |")
    out()
    out("Ratio = median reference time / median ours (> 1: ours is faster); worst case = fastest reference "
        "repeat / slowest ours, a floor. GFLOP: torch.utils.flop_counter over the convolutions (and Gram "
        "matmuls) that run, forward and backward; % = GFLOP/s achieved over section 1's. Same value: both "
        "sides compute the same loss (within 1e-3).")
    relu = rows[0]
    out(f"Goal relu2_2 >= 2.2x: {'MET' if relu['ratio'] >= 2.2 else 'NOT MET'} ({relu['ratio']:.2f}x).")
    out()

    if not args.no_memory:
        peaks = peak_memory(device, args.dry)
        what = ("torch.cuda.max_memory_allocated over the step" if device.type == "cuda" else
                "peak resident set (VmHWM, reset after a warm-up step) above the resident set before the step, "
                "malloc returning freed memory to the OS (MALLOC_MMAP_THRESHOLD_), a fresh process per row")
        out(f"## 3. Peak memory of one loss step ({what})")
        out()
        out("| loss | ours MiB | reference MiB | ratio (ref/ours) |")
        out("|---|---|---|---|")
        for name in LOSSES:
            o, r = peaks[(name, "ours")], peaks[(name, "reference")]
            out(f"| {name} | {o:.0f} | {r:.0f} | {r / o if o > 0 else float('nan'):.2f}x |")
        out()

    b = trial_breakdown(device, args.dry, args.repeats)
    out(f"## 4. Quickstart SR trial (relu2_2), one training step broken down ({b['precision']}, what "
        "trainer.precision=auto picks here)")
    out()
    out("| phase | ms | share of step |")
    out("|---|---|---|")
    for phase, seconds in b["phases"].items():
        out(f"| {phase} | {1000 * seconds:.1f} | {100 * seconds / b['step_s']:.0f}% |")
    out(f"| **step** | {1000 * b['step_s']:.1f} | 100% |")
    out()
    out(f"One evaluation (validation set: generator, LPIPS, PSNR-Y, SSIM-Y): {b['eval_s']:.3f} s; a quickstart "
        f"trial runs {b['n_evals']} of them next to {b['steps']} steps, so evaluation is "
        f"**{100 * b['eval_share']:.0f}%** of its time.")
    out()
    out(f"Building a trial's loss network (VGG-16 to relu5_3): first in the process {b['build_s'][0]:.3f} s, then "
        f"{b['build_s'][1]:.3f} s and {b['build_s'][2]:.3f} s; weights shared, not copied: "
        f"{'yes' if b['shared'] else 'NO'}.")
    out()

    if not args.no_sweep:
        s = sweep_overhead(args.dry)
        out("## 5. Sweep time outside training and evaluation")
        out()
        out(f"`run_sweep` in process, quickstart shape, {s['trials']} trials of {s['steps']} steps, Optuna + MLflow "
            f"on temporary sqlite files, CPU: wall {s['wall_s']:.1f} s, training+evaluation {s['training_s']:.1f} s: "
            f"**{100 * s['outside_share']:.0f}%** outside (task set-up, sampling, tracking, previews).")
        out()
    output, target = inputs(device, args.dry)
    net_rows = network_steps(device, output, target, args.repeats, one_step, timed)
    net_peaks = None if args.no_memory else {arch: child_peak(arch, "network", device, args.dry) for arch in ARCHS}
    out("## 6. Loss networks: a loss step at the deepest layer of stride 8, relative to VGG-16 relu2_2")
    out()
    for line in network_table(net_rows, net_peaks, None if args.no_memory else peaks[("relu2_2 (Johnson SR)", "ours")]):
        out(line)
    out()
    out("## 7. Your own network (`module:`, hooks) vs the same network cut by the built-in path")
    out()
    for line in declared_table(declared_steps(device, output, target, args.repeats, one_step, timed)):
        out(line)
    out()
    load_after = os.getloadavg()
    out(f"Took {time.perf_counter() - started:.0f} s. Load average after: {load_after[0]:.2f} (1 min). Reproduce: "
        "`make bench` (SAVE=1 writes this file).")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/<date>-<machine>.md")
    parser.add_argument("--dry", action="store_true", help="toy sizes: checks that every section runs")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--memory-child", nargs=2, metavar=("LOSS", "SIDE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.simplefilter("ignore", RandomWeightsWarning)
    device = resolve_device(args.device)
    if args.memory_child:
        memory_child(*args.memory_child, str(device), args.dry)
        return
    if args.dry:
        args.repeats = 1
    text = report(args, device)
    if args.save:
        folder = ROOT / "benchmarks" / "results"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{datetime.date.today():%Y-%m-%d}-{platform.node() or 'machine'}.md"
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
