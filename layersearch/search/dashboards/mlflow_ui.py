"""The MLflow dashboard of a study (`layersearch ui`): its URL, the server command, a free port.

The server runs as a child process; this module starts it, prints where to look, and stops it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Any

from ..storage import database_url, redact, sqlite_path
from ..tracking import TrackingError, find_experiment

__all__ = ["UI_ENV", "check_port", "run_ui", "stop_server", "ui_command", "ui_url"]

# Environment for the UI server. MLflow 3.17's server otherwise starts a job runner with seven huey
# consumer processes (GenAI judges, prompt optimisation, trace jobs) that a runs dashboard never uses; on a
# 2-core machine they roughly double the time until the page answers (~12-17 s -> ~32 s, measured here).
UI_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def ui_url(
    port: int, experiment_id: str | None, host: str = "127.0.0.1", *, run_id: str | None = None
) -> str:
    """The dashboard URL: the study's runs table (or one run's page), or the root without an experiment.

    `workflowType=machine_learning` matters: MLflow 3.17's UI otherwise opens in its GenAI mode, where an
    experiment's page is an empty traces overview ("No data") instead of the trials, and a run page is
    filed under "Evaluations".
    """
    root = f"http://{host}:{port}/"
    if experiment_id is None:
        return root
    run = f"/{run_id}" if run_id else ""
    return f"{root}#/experiments/{experiment_id}/runs{run}?workflowType=machine_learning"


def ui_command(uri: str, port: int, host: str = "127.0.0.1") -> list[str]:
    """argv that starts the MLflow UI server over the tracking store at `uri`.

    One worker: the dashboard has one user, and MLflow's default of four uvicorn workers costs seconds
    of start-up and memory on small machines. Artifacts of our experiments carry absolute file: URIs
    (see `artifact_location_for`), which the server reads directly, so no artifact flags are needed for
    the UI to list them and show preview images. Start it with `UI_ENV` in the environment.
    """
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", database_url(uri),
            "--host", host, "--port", str(port), "--workers", "1"]  # fmt: skip


def check_port(port: Any, host: str = "127.0.0.1") -> int:
    """``port`` as a number if it is one, in range and free on ``host``, else a one-line TrackingError."""
    if isinstance(port, bool) or not str(port).isdigit():
        raise TrackingError(f"port must be a whole number, got {port!r}")
    if not 1 <= int(port) <= 65535:
        raise TrackingError(f"port must be between 1 and 65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, int(port)))
        except OSError:
            raise TrackingError(f"port {port} on {host} is already in use; choose another port") from None
    return int(port)


def stop_server(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM (the MLflow server then stops its workers too), SIGKILL if it has not ended in ``timeout``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_ui(uri: str, study_name: str | None, port: int = 5000, open_for_seconds: float | None = None) -> int:
    """Serve the MLflow dashboard for `uri` until Ctrl-C (or `open_for_seconds`); returns an exit code.

    Raises:
        TrackingError: when the port is already in use.
    """
    host = "127.0.0.1"
    port = check_port(port, host)
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    exp_id = find_experiment(uri, study_name) if study_name else None
    print(f"MLflow store: {redact(uri)}")
    if study_name and exp_id is None:
        print(f"study {study_name!r} not found in this store; showing all experiments")
    print(f"Open {ui_url(port, exp_id, host)}   (Ctrl-C stops the server)", flush=True)

    proc = subprocess.Popen(ui_command(uri, port, host), env={**os.environ, **UI_ENV})
    interrupted = False
    try:
        proc.wait(timeout=open_for_seconds)
    except subprocess.TimeoutExpired:
        pass
    except KeyboardInterrupt:
        interrupted = True  # the terminal sent SIGINT to the server too; stop it and wait for it below
    if proc.poll() is None:
        stop_server(proc)
        return 0
    # The server ended on its own: a crash (bad URI, missing driver) keeps its exit code.
    return 0 if interrupted else proc.returncode
