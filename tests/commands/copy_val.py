"""Writes "outputs" for trial.score_dir: each validation image of argv[1], darkened by the trial's seed."""

import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

out = Path(os.environ["LAYERSEARCH_SCORE_DIR"])
for path in sorted(Path(sys.argv[1]).iterdir()):
    image = np.asarray(Image.open(path).convert("RGB")).astype(np.float32)
    Image.fromarray((image * 0.9).round().astype(np.uint8)).save(out / (path.stem + ".png"))
