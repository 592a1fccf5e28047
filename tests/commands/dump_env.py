"""Writes what a command trial receives (argv, environment, stdin, process group) to argv[1] as JSON."""

import json
import os
import sys

info = {"argv": sys.argv[2:], "env": {k: v for k, v in os.environ.items() if k.startswith(("LAYERSEARCH_", "PYTHON"))},
        "stdin": sys.stdin.read() if not sys.stdin.closed else None, "pgid": os.getpgrp(), "pid": os.getpid(),
        "sid": os.getsid(0), "cwd": os.getcwd()}
with open(sys.argv[1], "w") as handle:
    json.dump(info, handle)
with open(os.environ["LAYERSEARCH_METRICS"], "a") as handle:
    handle.write(json.dumps({"step": 1, "quality": 0.5}) + "\n")
