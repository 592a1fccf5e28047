"""Do two checkouts run the reference sweeps identically on this machine? For refactors: exact, not a tolerance.

`tests/search/test_reference_sweeps.py` compares with numbers recorded on another machine, so its tolerance
must cover other CPUs (loose for the style task). On ONE machine a change that should alter nothing must give
the same trials to the last bit. This runs the test's two sweeps (SR and style, its exact overrides) through
the CLI of each checkout, with this venv, and compares every trial's number, state, params, values, seed and
layer config exactly.

    .venv/bin/python benchmarks/same_sweeps.py /path/to/old/checkout /path/to/new/checkout

Exit status 0 when both sweeps are identical, 1 otherwise (the first difference is printed). About 3 minutes
per checkout on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SPACES = {"sr": ["task=sr_x4", "search_space=sr_relu"], "style": ["task=style", "search_space=style_johnson"]}
COMMON = ["preset=smoke", "study.n_trials=5", "trainer.device=cpu", "trainer.precision=fp32", "trainer.steps=6",
          "trainer.eval_every=3", "study.pruner=none"]
DUMP = """
import json, sys, optuna
trials = optuna.load_study(study_name=sys.argv[1], storage=sys.argv[2]).trials
print(json.dumps([[t.number, t.state.name, t.params, t.values,
                   {k: t.user_attrs.get(k) for k in ("layer_config", "seed", "baseline")}] for t in trials]))
"""


def run(checkout: Path, name: str, folder: Path) -> list:
    env = {**os.environ, "PYTHONPATH": str(checkout), "TQDM_DISABLE": "1"}
    study = f"ref_{name}"
    subprocess.run([sys.executable, "-m", "layersearch.cli", "sweep", *COMMON, *SPACES[name], f"study.name={study}",
                    f"paths.studies_dir={folder}", f"tracking.uri=sqlite:///{folder}/mlflow.db"],
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = subprocess.run([sys.executable, "-c", DUMP, study, f"sqlite:///{folder}/{study}/optuna.db"], env=env,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    args = parser.parse_args()
    same = True
    for name in SPACES:
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            old, new = run(args.old.resolve(), name, Path(a)), run(args.new.resolve(), name, Path(b))
        if old == new:
            print(f"{name}: {len(old)} trials identical (numbers, states, params, values, layer configs)")
            continue
        same = False
        first = next((i for i, (x, y) in enumerate(zip(old, new, strict=False)) if x != y), min(len(old), len(new)))
        print(f"{name}: DIFFERENT from trial {first}:\n  old {old[first:first + 1]}\n  new {new[first:first + 1]}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
