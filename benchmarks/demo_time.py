"""The offline demo's time, new (real EfficientNet-Lite0, HaarPSI + PSNR-Y) against old (random VGG-16, LPIPS on a
random AlexNet), in the same run on the same machine, as a ratio.

    .venv/bin/python benchmarks/demo_time.py [--out FILE]

Each demo is what `make demo OFFLINE=1` runs: ``layersearch sweep``, ``export`` and ``report`` with its
arguments, in a fresh temporary studies folder, one run each (old first). Prints each command's wall time,
each demo's total, and new / old; ``--out`` also writes them to a file.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEMOS = {
    # The offline demo before issue 25: the quickstart sweep with random weights everywhere (labelled).
    "old (random vgg16, lpips alex/random)": ["preset=quickstart", "loss_net.weights=random",
                                              "metrics.lpips.weights=random", "study.name=quickstart_random"],
    # The offline demo now (conf/preset/offline.yaml).
    "new (efficientnet_lite0 imagenet, haarpsi + psnr_y)": ["preset=offline"],
}


def run_demo(args: list[str], root: Path) -> dict[str, float]:
    times = {}
    paths = [f"paths.studies_dir={root}/studies", f"paths.outputs_dir={root}/outputs", "trainer.progress=false"]
    for command in ("sweep", "export", "report"):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "layersearch.cli", command, *args, *paths], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times[command] = time.perf_counter() - started
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lines, totals = [], {}
    for name, demo_args in DEMOS.items():
        with tempfile.TemporaryDirectory() as tmp:
            times = run_demo(demo_args, Path(tmp))
        totals[name] = sum(times.values())
        lines.append(f"{name}: " + ", ".join(f"{c} {t:.0f} s" for c, t in times.items())
                     + f"; total {totals[name]:.0f} s")
        print(lines[-1], flush=True)
    old, new = totals.values()
    lines.append(f"new / old: {new / old:.2f}")
    print(lines[-1])
    if args.out:
        args.out.write_text(f"# `make demo OFFLINE=1`, old vs new, one run each, same machine "
                            f"({time.strftime('%Y-%m-%d %H:%M')})\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
