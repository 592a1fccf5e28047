"""How far do the reference sweeps' values move when float32 sums are reduced in another order? One command.

    PYTHONPATH=. .venv/bin/python benchmarks/reference_tolerance.py [--variants NAME ...] [--tasks sr|style ...]
        [--save FILE.json]

tests/search/test_reference_sweeps.py compares the values of two tiny sweeps (SR and style, 5 and 4 trials
of 6 steps, CPU, fp32) with numbers recorded on one machine. Another CPU reduces float32 sums in another order
(other SIMD widths, other thread splits, other oneDNN kernels), and 6 Adam steps carry that rounding into
the values. This runs the very sweeps of the test (its own ``run_reference_sweep``) in a fresh process per
variant, each a way of provoking another reduction order on this machine:

- ``native``: this machine as it is (its best ATen kernels, all its threads);
- ``threads1``: one thread (``torch.set_num_threads(1)``, ``OMP_NUM_THREADS=MKL_NUM_THREADS=1``);
- ``aten_default``: ``ATEN_CPU_CAPABILITY=default`` (ATen's scalar kernels instead of AVX2/AVX512);
- ``aten_avx2``: ``ATEN_CPU_CAPABILITY=avx2`` (only where the CPU has AVX512: otherwise it is ``native``);
- ``onednn_sse41``: ``ONEDNN_MAX_CPU_ISA=SSE41`` (oneDNN's convolutions with 128-bit vectors);
- ``oldest``: all three of the above at once;
- ``ulp``: ``native`` with each initial generator weight moved by one float32 ulp (a relative ~1e-7
  nudge): same maths, other rounding.

It prints, per variant and task, the largest relative difference of any trial's value from the recorded
reference and from ``native``, and whether the trial numbers, states and sampled params stay equal; then per
task and objective the largest difference over all variants next to the test's ``TOLERANCE``. About 20 min
on 2 busy cores (2-4 min a variant).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = "REFERENCE-TOLERANCE-RESULT "
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
VARIANTS: dict[str, tuple[dict[str, str], int | None, bool]] = {  # env, torch threads, ulp nudge
    "native": ({}, None, False),
    "threads1": (ONE_THREAD, 1, False),
    "aten_default": ({"ATEN_CPU_CAPABILITY": "default"}, None, False),
    "aten_avx2": ({"ATEN_CPU_CAPABILITY": "avx2"}, None, False),
    "onednn_sse41": ({"ONEDNN_MAX_CPU_ISA": "SSE41"}, None, False),
    "oldest": ({"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", **ONE_THREAD}, 1, False),
    "ulp": ({}, None, True),
}


def _test_module():
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "search")]
    import test_reference_sweeps

    return test_reference_sweeps


def _nudge_generators_by_one_ulp() -> None:
    """Every task's ``build_generator`` returns its model with each weight moved one float32 ulp up."""
    import torch

    from layersearch.trial.tasks import Task

    def nudged(build):
        def build_generator(self):
            model = build(self)
            with torch.no_grad():
                for p in model.parameters():
                    p.copy_(torch.nextafter(p, torch.full_like(p, float("inf"))))
            return model

        return build_generator

    todo = [Task]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if "build_generator" in cls.__dict__:
            cls.build_generator = nudged(cls.__dict__["build_generator"])


def worker(threads: int | None, ulp: bool, tasks: list[str]) -> None:
    """Run both reference sweeps in this process and print their trials as one JSON line."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    if ulp:
        _nudge_generators_by_one_ulp()
    ref = _test_module()
    result = {"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(), "tasks": {}}
    for name in tasks:
        with tempfile.TemporaryDirectory() as tmp:
            trials = ref.run_reference_sweep(name, Path(tmp))
        result["tasks"][name] = [{"number": t.number, "state": t.state.name, "params": t.params, "values": t.values}
                                 for t in trials]
    print(MARK + json.dumps(result), flush=True)


def _run_variant(name: str, tasks: list[str]) -> tuple[dict, float]:
    env, threads, ulp = VARIANTS[name]
    command = [sys.executable, __file__, "--worker", "--tasks", *tasks] + (["--threads", str(threads)] if threads else []) + (["--ulp"] if ulp else [])
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"variant {name} failed:\n{proc.stderr[-3000:]}")
    line = next(line for line in proc.stdout.splitlines() if line.startswith(MARK))
    return json.loads(line[len(MARK):]), seconds


def _rel(got: float, want: float) -> float:
    return abs(got - want) / abs(want)


def _max_rel(trials: list[dict], against: list[dict], objective: int | None = None) -> float:
    return max(_rel(g, w) for got, want in zip(trials, against, strict=True)
               for k, (g, w) in enumerate(zip(got["values"], want["values"], strict=True)) if objective in (None, k))


def _same_trials(trials: list[dict], against: list[dict]) -> bool:
    """Equal trial numbers, states and params (exactly, as the test asks)."""
    return len(trials) == len(against) and all(g[k] == w[k] for g, w in zip(trials, against, strict=True)
                                               for k in ("number", "state", "params"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="which to run (default: all that apply)")
    parser.add_argument("--tasks", nargs="+", choices=["sr", "style"], default=["sr", "style"])
    parser.add_argument("--save", type=Path, help="also write every variant's trials to this JSON file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ulp", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.threads, args.ulp, args.tasks)

    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    variants = args.variants or [v for v in VARIANTS if v != "aten_avx2" or capability.startswith("AVX512")]
    if "native" not in variants:
        variants.insert(0, "native")
    print(f"torch {torch.__version__}, CPU capability {capability}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads")
    ref = _test_module()
    reference = {task: ref.expected(task) for task in args.tasks}
    results = {}
    for name in variants:
        results[name], seconds = _run_variant(name, args.tasks)
        print(f"  {name}: {seconds:.0f} s (capability {results[name]['capability']}, {results[name]['threads']} threads)",
              flush=True)
    if args.save:
        args.save.write_text(json.dumps(results, indent=1))
    print()
    print(report(results, reference, variants, ref.TOLERANCE))


def report(results: dict, reference: dict, variants: list[str], tolerance: dict) -> str:
    """Per variant and task, the largest relative difference of a value from the recorded one and from
    ``native``'s, and whether trial numbers, states and params are equal; then per task and objective the
    largest difference over all variants next to the test's tolerance."""
    tasks = list(reference)
    lines = ["max relative difference of any trial's value (all trials, all objectives)",
             f"{'variant':<14}" + "".join(f"{t + ' vs recorded':>20}{t + ' vs native':>18}{'params':>8}" for t in tasks)]
    for name in variants:
        row = f"{name:<14}"
        for task in tasks:
            got = results[name]["tasks"][task]
            if _same_trials(got, reference[task]):
                row += f"{_max_rel(got, reference[task]):>20.2e}{_max_rel(got, results['native']['tasks'][task]):>18.2e}{'same':>8}"
            else:
                row += f"{'':>20}{'':>18}{'DIFFER':>8}"
        lines.append(row)
    lines.append("\nper objective: the largest relative difference from the recorded value over all variants and trials")
    for task in tasks:
        alike = [v for v in variants if _same_trials(results[v]["tasks"][task], reference[task])]
        for k, rel in enumerate(tolerance[task]):
            worst = max((_max_rel(results[v]["tasks"][task], reference[task], k), v) for v in alike)
            lines.append(f"  {task} objective {k}: {worst[0]:.2e} ({worst[1]}); the test allows {rel:g}"
                         + ("" if worst[0] <= rel else "  EXCEEDED"))
    return "\n".join(lines)

if __name__ == "__main__":
    main()
