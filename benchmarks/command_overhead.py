"""What a command trial costs over the same training run in-process, as a ratio (README "Performance").

The same training (examples/denoise_script/train.py, its `train(t)`) runs through the same `Trial` handle as a
`trial=python` function inside this process and as a `trial=command` in a new process, interleaved, with the
step count calibrated so that the in-process run takes about ``--seconds`` (the issue's goal: under 5% for a
30 s trial). The in-process side is warm, as in a sweep's later trials (imports, weights, photos); the command
side pays what every command trial pays: a new Python, torch and layersearch imports, weights initialised.

    .venv/bin/python benchmarks/command_overhead.py [--seconds 30] [--repeats 3] [--out FILE]
        [--device cuda --batch-size 16 --crop 96 --size 256]   # a GPU-sized run (benchmarks/gpu.sh)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "denoise_script" / "train.py"
LAYERS = {"loss_net": {"arch": "vgg16", "weights": "random"}, "content_layers": {"relu2_2": 1.0}, "style_layers": {},
          "content_weight": 1.0, "style_weight": 0.0, "pixel_weight": 0.0, "tv_weight": 0.0, "criterion": "mse"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="target length of one in-process trial")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the lines printed to this file")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: the trial's device, on both sides")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop", type=int, default=32, help="training crop in px")
    parser.add_argument("--size", type=int, default=128, help="the photos are resized to this many px")
    args = parser.parse_args()
    size = {"batch_size": args.batch_size, "crop": args.crop, "size": args.size}
    warnings.simplefilter("ignore")

    from layersearch.config import load_settings
    from layersearch.trial.command import CommandTraining
    from layersearch.trial.handle import Trial
    from layersearch.trial.outcome import run_training
    from layersearch.trial.python import PythonTraining, resolve_function

    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    work = Path(tempfile.mkdtemp(prefix="command-overhead-"))
    counter = iter(range(10**6))

    def trial(steps: int) -> Trial:
        number = next(counter)
        return Trial(number=number, study_name="bench", params={}, layer_config=LAYERS, steps=steps, seed=0,
                     device=args.device, dir=work / f"t{number}", objectives=["lpips", "psnr_y"],
                     reporter=lambda step, values: None, lpips=settings.metrics.lpips)

    in_process = PythonTraining(functools.partial(resolve_function(f"{SCRIPT}:train"), **size))
    flags = f"--batch-size {args.batch_size} --crop {args.crop} --size {args.size}"
    # conf's trial=command settings (poll_s, kill_grace_s) with this command, and random LPIPS weights.
    settings = load_settings(["trial=command", "metrics.lpips.weights=random"])
    command = CommandTraining(dataclasses.replace(settings.trial, cmd=f"{sys.executable} {SCRIPT} {flags}"),
                              settings.metrics.lpips)
    in_process.check()
    command.check()

    def timed(training, steps: int):
        outcome = run_training(training, trial(steps))
        if outcome.state != "COMPLETE":
            raise SystemExit(f"{training.kind} run ended {outcome.state}: {outcome.reason}")
        return outcome.seconds, outcome.values

    timed(in_process, 20)  # warm: imports, weights and photos, as for every trial after a sweep's first
    calibration, _ = timed(in_process, 100)
    steps = max(20, round(100 * args.seconds / calibration))
    say(f"command trial vs the same training in-process (examples/denoise_script/train.py, relu2_2, random "
        f"weights, on {args.device}, batch {args.batch_size}, {args.crop} px crops), {steps} steps "
        f"(~{args.seconds:g} s in-process), {args.repeats} interleaved repeats, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start")
    ours, theirs, same = [], [], True
    for r in range(args.repeats):
        a, values_a = timed(in_process, steps)
        b, values_b = timed(command, steps)
        ours.append(a)
        theirs.append(b)
        same = same and all(abs(values_a[k] - values_b[k]) <= 1e-6 * max(1.0, abs(values_a[k])) for k in values_a)
        say(f"  repeat {r + 1}: in-process {a:.2f} s, command {b:.2f} s, ratio {b / a:.3f}")
    a, b = statistics.median(ours), statistics.median(theirs)
    say(f"median: in-process {a:.2f} s, command {b:.2f} s: the command trial takes {b / a:.3f}x "
        f"({100 * (b / a - 1):+.1f}%; {b - a:.2f} s per trial, a fixed cost that a longer trial spreads)")
    # CUDA kernels need not be deterministic (cuDNN picks algorithms at run time): there, scores may differ a little.
    note = " (CUDA: kernels need not be deterministic)" if args.device.startswith("cuda") and not same else ""
    say(f"same final scores in both: {'yes' if same else 'NO'}{note}; load average {os.getloadavg()[0]:.2f} at the end")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
