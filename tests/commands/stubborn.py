"""A command that ignores SIGTERM, and so does its child: only SIGKILL to the whole group stops them.

Writes ``pids.json`` (its process group and its child) into the trial folder, then a metrics line every
20 ms forever.
"""

import json
import os
import signal
import subprocess
import sys
import time

signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the child: ignored signals stay ignored
child = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(1)"])
folder = os.environ["LAYERSEARCH_TRIAL_DIR"]
with open(os.path.join(folder, "pids.json.tmp"), "w") as handle:
    json.dump({"pgid": os.getpgrp(), "pid": os.getpid(), "child": child.pid}, handle)
os.replace(os.path.join(folder, "pids.json.tmp"), os.path.join(folder, "pids.json"))
step = 0
while True:
    step += 1
    with open(os.environ["LAYERSEARCH_METRICS"], "a") as handle:
        handle.write(json.dumps({"step": step, "quality": 1.0 / step}) + "\n")
    time.sleep(0.02)
