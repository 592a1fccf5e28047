"""Fails (exit 1, a message on stderr) in trial number 1; reports a quality in every other trial."""

import json
import os
import sys

if os.environ["LAYERSEARCH_TRIAL_NUMBER"] == "1":
    print("loading the dataset failed: no such file data/train.lmdb", file=sys.stderr)
    sys.exit(1)
with open(os.environ["LAYERSEARCH_METRICS"], "a") as handle:
    handle.write(json.dumps({"step": 1, "quality": 0.5 + int(os.environ["LAYERSEARCH_TRIAL_NUMBER"]) / 100}) + "\n")
