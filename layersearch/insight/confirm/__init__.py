"""`layersearch confirm`: the study's top configs and baselines retrained longer, with several seeds.

``run`` is the command (``run_confirm``, ``export_confirmed``), ``plan`` what is retrained and how long,
``queue`` the jobs study several processes share, ``job`` one (config, seed) run, ``race`` which configs stay in
after each seed round (plain functions on scores), ``summary`` the verdicts.
The rest of layersearch imports from here, never from those modules.
"""

from .plan import Candidate, ConfirmError, ConfirmPlan, check_study, read_plan, select_candidates
from .race import RaceState, Verdict, race
from .run import ConfirmResult, confirm_dir, export_confirmed, run_confirm
from .summary import render_markdown, summarise, summary_lines

__all__ = [
    "Candidate",
    "ConfirmError",
    "ConfirmResult",
    "ConfirmPlan",
    "RaceState",
    "Verdict",
    "check_study",
    "confirm_dir",
    "export_confirmed",
    "race",
    "read_plan",
    "render_markdown",
    "run_confirm",
    "select_candidates",
    "summarise",
    "summary_lines",
]
