"""`layersearch dashboard`: optuna-dashboard (history, importances, parallel coordinates, Pareto front) for
a study, live while it runs, on 127.0.0.1.

Served from this process with the storage that `open_storage` opens (SQLite, journal file or PostgreSQL,
with the same retries), rather than by starting optuna-dashboard's command: a command line would carry the
storage URL and its password where any user of the machine can read it (``ps``).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ...settings import StudySettings
from ..storage import open_study_storage, redact
from ..tracking import TrackingError
from .mlflow_ui import check_port

__all__ = ["DEFAULT_PORT", "dashboard_url", "serve_dashboard"]

DEFAULT_PORT = 8080  # optuna-dashboard's own default; `layersearch ui` (MLflow) keeps 5000


def dashboard_url(port: int, study_id: int | None = None, host: str = "127.0.0.1") -> str:
    """The study's page (or the list of studies without ``study_id``)."""
    root = f"http://{host}:{port}/dashboard"
    return root if study_id is None else f"{root}/studies/{study_id}"


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a thread per request: the page polls the API while a plot is computed


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        # One access-log line per API poll (every few seconds) would bury our own lines.
        if os.environ.get("LAYERSEARCH_DEBUG"):
            super().log_message(format, *args)


def serve_dashboard(study: StudySettings, studies_dir: str | Path, port: int | None = None,
                    open_for_seconds: float | None = None) -> int:
    """Serve optuna-dashboard for the study ``study.name`` until Ctrl-C (or ``open_for_seconds``).

    Returns:
        The exit status, 0.

    Raises:
        StudyError: no such study (or no storage) where ``study`` says; one line, password removed.
        TrackingError: the port is out of range or taken.
    """
    from optuna_dashboard import wsgi

    host, port = "127.0.0.1", check_port(DEFAULT_PORT if port is None else port)
    storage, url, name = open_study_storage(study, studies_dir)
    study_id = storage.get_study_id_from_name(name)
    try:
        server = make_server(host, port, wsgi(storage), server_class=_Server, handler_class=_QuietHandler)
    except OSError:  # taken between the check and now
        raise TrackingError(f"port {port} on {host} is already in use; choose another port") from None
    print(f"Optuna storage: {redact(url)}")
    print(f"Open {dashboard_url(port, study_id, host)}   (Ctrl-C stops the server)", flush=True)
    thread = threading.Thread(target=server.serve_forever, name="dashboard", daemon=True)
    thread.start()
    try:
        thread.join(open_for_seconds)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    return 0
