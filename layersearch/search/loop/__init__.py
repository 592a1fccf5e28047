"""The study loop: what is searched (``space``, ``algorithms``), preparing or joining a study (``study``),
a worker's loop (``worker``) running one trial at a time (``runner``), many workers (``launch``), and the
entry points `layersearch sweep` and ``layersearch.sweep`` (``run``).

A local worker process runs ``python -m layersearch.search.loop`` (``__main__``). The rest of layersearch
imports from here, never from those modules.
"""

from .algorithms import MultiObjectiveMedian, make_pruner, make_sampler
from .launch import gpu_plan, n_workers
from .run import run_sweep, sweep
from .space import Infeasible, SearchSpace, SpaceError, metric_overlap_warning
from .study import prepare_study, reserve_trial, resolve_objectives, warmup_steps
from .worker import Interrupted

__all__ = [
    "Infeasible",
    "Interrupted",
    "MultiObjectiveMedian",
    "SearchSpace",
    "SpaceError",
    "gpu_plan",
    "make_pruner",
    "make_sampler",
    "metric_overlap_warning",
    "n_workers",
    "prepare_study",
    "reserve_trial",
    "resolve_objectives",
    "run_sweep",
    "sweep",
    "warmup_steps",
]
