"""The file contract between a sweep and a command trial, and `trial_from_env`, the script side of it.

For each command trial layersearch writes into the trial's folder:

- ``loss_config.yaml``: the sampled layer config (``PerceptualLoss.from_config`` loads it);
- ``trial.json``: number, study, params, layer config, steps, seed, objectives, device, file paths;

and passes their paths as placeholders and environment variables (``ENV``). The command reports by
appending JSON lines to the metrics file, ``{"step": 100, "lpips": 0.21, "psnr_y": 27.3}``, one object per
line; a line with ``"final": true`` holds the values to keep, else the last complete line at exit 0 does.
Any language can follow this contract; in Python, `trial_from_env` does it in two lines::

    t = layersearch.trial_from_env()
    loss_fn = t.loss            # ... train for t.steps with seed t.seed ...
    t.report(step, lpips=..., psnr_y=...)
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..errors import LayersearchError
from ..settings import LpipsSettings, settings_to_dict
from .handle import Trial

__all__ = ["ENV", "EnvTrial", "NotInSweep", "trial_from_env", "write_trial_files"]

#: placeholder -> environment variable; both carry the same value.
ENV = {
    "loss_config": "LAYERSEARCH_LOSS_CONFIG",
    "trial_json": "LAYERSEARCH_TRIAL_JSON",
    "trial_dir": "LAYERSEARCH_TRIAL_DIR",
    "metrics": "LAYERSEARCH_METRICS",
    "steps": "LAYERSEARCH_STEPS",
    "seed": "LAYERSEARCH_SEED",
    "number": "LAYERSEARCH_TRIAL_NUMBER",
    "device": "LAYERSEARCH_DEVICE",
    "score_dir": "LAYERSEARCH_SCORE_DIR",
}


class NotInSweep(LayersearchError, RuntimeError):
    """`trial_from_env` was called outside a command trial (no trial.json to read)."""


def write_trial_files(trial: Trial, metrics_file: Path, score_dir: Path | None, lpips: LpipsSettings,
                      loss_seed: int) -> dict[str, str]:
    """Write ``loss_config.yaml`` and ``trial.json`` into ``trial.dir``; return the placeholder values."""
    trial.dir.mkdir(parents=True, exist_ok=True)
    loss_config = trial.dir / "loss_config.yaml"
    loss_config.write_text(yaml.safe_dump(trial.layer_config, sort_keys=False))
    metrics_file.touch()
    values = {
        "loss_config": str(loss_config), "trial_json": str(trial.dir / "trial.json"), "trial_dir": str(trial.dir),
        "metrics": str(metrics_file), "steps": str(trial.steps), "seed": str(trial.seed),
        "number": str(trial.number), "device": str(trial.device), "score_dir": str(score_dir or ""),
    }
    info = {"number": trial.number, "study": trial.study_name, "params": trial.params,
            "layer_config": trial.layer_config, "steps": trial.steps, "seed": trial.seed, "loss_seed": loss_seed,
            "objectives": trial.objectives, "scored": list(trial.scored), "device": str(trial.device),
            "lpips": settings_to_dict(lpips),
            "files": {k: v for k, v in values.items() if k in ("loss_config", "trial_dir", "metrics", "score_dir")}}
    Path(values["trial_json"]).write_text(json.dumps(info, indent=2) + "\n")
    return values


class EnvTrial(Trial):
    """The `Trial` handle inside a command trial: ``report`` appends one JSON line to the metrics file.

    The sweep reads the lines while the command runs and decides about pruning there; a pruned command is
    stopped with SIGTERM to its process group (then SIGKILL after ``trial.kill_grace_s``).
    """

    def __init__(self, info: Mapping[str, Any]):
        self.metrics_file = Path(info["files"]["metrics"])
        score_dir = info["files"].get("score_dir")
        self.score_dir = Path(score_dir) if score_dir else None
        super().__init__(number=info["number"], study_name=info["study"], params=info["params"],
                         layer_config=info["layer_config"], steps=info["steps"], seed=info["seed"],
                         device=str(info.get("device", "cpu")), dir=info["files"]["trial_dir"],
                         objectives=info["objectives"], reporter=self._append, loss_seed=info.get("loss_seed", 0),
                         lpips=LpipsSettings(**info["lpips"]) if info.get("lpips") else None,
                         metric_names=info.get("scored"))

    def _append(self, step: int | None, values: dict[str, float], final: bool = False) -> None:
        line = ({} if step is None else {"step": step}) | values | ({"final": True} if final else {})
        with open(self.metrics_file, "a") as handle:
            handle.write(json.dumps(line) + "\n")
            handle.flush()
            os.fsync(handle.fileno())  # the line is on disk before the sweep reads it, even if we die next
        return None

    def final(self, **metrics: Any) -> None:
        """Write the values to keep (``"final": true``): the objectives' values are taken from this line."""
        from .handle import metric_value

        self._append(self._last_step, {k: metric_value(k, v) for k, v in metrics.items()}, final=True)


def trial_from_env(exit_on_error: bool = True) -> EnvTrial:
    """The `Trial` handle of the command trial this process runs in (``LAYERSEARCH_TRIAL_JSON``).

    Outside a sweep it prints one line saying what is missing and exits with status 2 (or raises
    `NotInSweep` with ``exit_on_error=False``).
    """
    path = os.environ.get(ENV["trial_json"])
    try:
        if not path:
            raise NotInSweep(f"trial_from_env(): {ENV['trial_json']} is not set: run this script as a command "
                             "trial (`layersearch sweep trial=command trial.cmd='python THIS_SCRIPT ...'`)")
        try:
            info = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise NotInSweep(f"trial_from_env(): cannot read {ENV['trial_json']}={path}: {err}") from None
        return EnvTrial(info)
    except NotInSweep as err:
        if not exit_on_error:
            raise
        print(f"layersearch: {err}", file=sys.stderr)
        raise SystemExit(2) from None
