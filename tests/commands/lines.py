"""Writes the metrics lines given as argv[1:] (one JSON text each, "PARTIAL:<text>" without its newline)."""

import os
import sys

with open(os.environ["LAYERSEARCH_METRICS"], "a") as handle:
    for line in sys.argv[1:]:
        handle.write(line[len("PARTIAL:"):] if line.startswith("PARTIAL:") else line + "\n")
print("out line", flush=True)
print("err line one\nerr line two", file=sys.stderr)
code = int(os.environ.get("EXIT_CODE", "0"))
sys.exit(code)
