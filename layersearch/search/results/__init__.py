"""What a study has come to: its answer (first runs, the best trial or the Pareto front), the seed noise of
its baselines, the sweep's summary, and the exported layer configs.

``ranking`` picks the answer, ``noise`` measures seed noise and calls differences against it, ``summary``
sums up a sweep for the console and MLflow, ``export`` writes `layersearch export`'s files. The rest of
layersearch imports from here, never from those modules.
"""

from .export import ExportError, export_study, provenance_config
from .noise import ALPHA as NOISE_ALPHA
from .noise import (
    NO_ESTIMATE,
    NoiseFloor,
    compare,
    describe,
    is_repeat,
    noise_floor,
    runs_of,
    seed_groups,
    threshold,
)
from .ranking import dominates, first_runs, front
from .summary import SweepResult, best_rows, best_summary, counts, last_fail_reason, log_summary, noise_lines

__all__ = [
    "NOISE_ALPHA",
    "NO_ESTIMATE",
    "ExportError",
    "NoiseFloor",
    "SweepResult",
    "best_rows",
    "best_summary",
    "compare",
    "counts",
    "describe",
    "dominates",
    "export_study",
    "first_runs",
    "front",
    "is_repeat",
    "last_fail_reason",
    "log_summary",
    "noise_floor",
    "noise_lines",
    "provenance_config",
    "runs_of",
    "seed_groups",
    "threshold",
]
