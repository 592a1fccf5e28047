"""Runs stubborn.py as a command trial in this process, as a sweep worker would; the test SIGKILLs us."""

import sys
from pathlib import Path

from layersearch.settings import LpipsSettings, TrialSettings
from layersearch.trial.command import CommandTraining
from layersearch.trial.handle import Trial

folder = Path(sys.argv[1])
training = CommandTraining(TrialSettings(kind="command", cmd=f"{sys.executable} {Path(__file__).parent / 'stubborn.py'}",
                                         kill_grace_s=1.0, poll_s=0.05), LpipsSettings(net="alex", weights="random"))
trial = Trial(number=0, study_name="s", params={}, layer_config={"content_layers": {"relu1_2": 1.0}}, steps=10,
              seed=0, device="cpu", dir=folder, objectives=["quality"], reporter=lambda step, values: None)
training(trial)
