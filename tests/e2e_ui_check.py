"""Browser check of `layersearch ui`: is the study's runs table what a user sees? (not run by pytest)

Builds a small MLflow store with StudyTracker (one experiment, two trials with a preview.png), serves it
with `ui_command`, checks the REST API, then takes headless-Chromium screenshots of `ui_url(...)` and of
one run's artifact view. Look at the screenshots: the runs table must list trial-0 and trial-1.

    python tests/e2e_ui_check.py OUT.png         # also writes OUT_run.png (run page, preview artifact)

Chromium: Debian's `chromium` package (`apt-get install -y chromium`); installed here when missing and
running as root. Exits non-zero when the server never answers or a check fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from layersearch.search.dashboards import UI_ENV, stop_server, ui_command, ui_url
from layersearch.search.tracking import StudyTracker

STUDY = "e2e-study"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_png(path: Path, size: int = 64) -> None:
    from PIL import Image

    img = Image.new("RGB", (size, size))
    img.putdata([(4 * x, 4 * y, 128) for y in range(size) for x in range(size)])
    img.save(path)


def make_store(root: Path) -> tuple[str, StudyTracker, list[str]]:
    uri = f"sqlite:///{root}/studies/mlflow.db"
    tracker = StudyTracker(
        uri,
        STUDY,
        storage_url=f"sqlite:///{root}/studies/{STUDY}/optuna.db",
        tags={"layersearch.random_weights": "true", "layersearch.task": "sr_x4"},
    )
    preview = root / "preview.png"
    write_png(preview)
    run_ids = []
    for n, (layer, lpips) in enumerate([("relu2_2", 0.31), ("relu5_4", 0.27)]):
        run_ids.append(
            tracker.start_trial(n, {"layer": layer, "content_weight": 1.0}, {"content_layers": {layer: 1.0}})
        )
        for step in (50, 100, 150):
            scale = 1 + 50 / step
            tracker.log_metrics(
                step,
                {"lpips": lpips * scale, "psnr_y": 24 / scale, "train/total": 0.1 * scale,
                 f"train/content/{layer}": 0.05 * scale},
            )  # fmt: skip
        tracker.log_artifact(preview)
        tracker.end_trial("COMPLETE", {"lpips": lpips})
    tracker.log_summary(
        [{"content_layers": {"relu5_4": 1.0}, "provenance": {"trial": 1}}],
        [{"trial": 1, "lpips": 0.27}, {"trial": 0, "lpips": 0.31}],
        storage_url=f"sqlite:///{root}/studies/{STUDY}/optuna.db",
    )
    return uri, tracker, run_ids


def wait_for_server(base: str, proc: subprocess.Popen, timeout: float = 120.0) -> float:
    start = time.time()
    while time.time() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"FAIL: MLflow server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(base + "health", timeout=2) as r:
                if r.status == 200:
                    return time.time() - start
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"FAIL: MLflow server did not answer at {base} within {timeout:.0f} s")


def check_api(base: str, exp_id: str, run_id: str) -> None:
    req = urllib.request.Request(
        base + "api/2.0/mlflow/runs/search",
        data=json.dumps({"experiment_ids": [exp_id]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    names = sorted(r["info"]["run_name"] for r in json.load(urllib.request.urlopen(req))["runs"])
    print("runs served:", names)
    if names != ["summary", "trial-0", "trial-1"]:
        raise SystemExit(f"FAIL: unexpected runs {names}")
    # The same endpoint the run page uses to show an image artifact.
    url = f"{base}get-artifact?path=preview.png&run_uuid={run_id}"
    with urllib.request.urlopen(url) as r:
        head = r.read(8)
    if head != b"\x89PNG\r\n\x1a\n":
        raise SystemExit(f"FAIL: preview.png not served as a PNG: {head!r}")
    print("preview.png served by /get-artifact")


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None and hasattr(os, "geteuid") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(
            ["apt-get", "install", "-y", "chromium"], check=True, env=env, stdout=subprocess.DEVNULL
        )
        exe = shutil.which("chromium")
    if exe is None:
        raise SystemExit("FAIL: chromium not found (apt-get install -y chromium)")
    return exe


def screenshot(exe: str, url: str, out: Path, timeout: float = 120.0) -> None:
    out.unlink(missing_ok=True)
    # Chromium's renderer processes outlive a killed parent; its own session makes them killable together.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--window-size=1400,900",
               f"--screenshot={out}", url]  # fmt: skip
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if not out.exists() or out.stat().st_size == 0:
        raise SystemExit(f"FAIL: no screenshot written for {url} within {timeout:.0f} s")
    print(f"screenshot {out}  <- {url}")


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    out = Path(argv[1]).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    exe = chromium()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.time()
        uri, tracker, run_ids = make_store(root)
        print(f"store built in {time.time() - t0:.1f} s")
        port = free_port()
        base = f"http://127.0.0.1:{port}/"
        # cwd elsewhere: artifacts must not depend on where the server starts.
        log = open(root / "server.log", "w")  # a file, not a pipe: a full pipe would stall the server
        env = {**os.environ, **UI_ENV}  # what `layersearch ui` runs with
        proc = subprocess.Popen(ui_command(uri, port), cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            print(f"server answered after {wait_for_server(base, proc):.1f} s")
            check_api(base, tracker.experiment_id, run_ids[0])
            t0 = time.time()
            screenshot(exe, ui_url(port, tracker.experiment_id), out)
            run_page = ui_url(port, tracker.experiment_id, run_id=run_ids[0]).replace(
                "?", "/artifacts/preview.png?"
            )
            screenshot(exe, run_page, out.with_name(out.stem + "_run.png"))
            print(f"screenshots took {time.time() - t0:.1f} s")
        except SystemExit:
            log.flush()
            print((root / "server.log").read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            stop_server(proc, timeout=15)
            log.close()
        stray = [p for p in ("mlruns", "mlartifacts") if (root / p).exists()]
        if stray:
            print(f"note: the server created {stray} in its cwd")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
