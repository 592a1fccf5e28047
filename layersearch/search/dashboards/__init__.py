"""The two dashboards of a study, each served until Ctrl-C: MLflow's runs (`layersearch ui`, ``mlflow_ui``)
and optuna-dashboard's study views (`layersearch dashboard`, ``optuna_ui``).

The rest of layersearch imports from here, never from those modules.
"""

from .mlflow_ui import UI_ENV, check_port, run_ui, stop_server, ui_command, ui_url
from .optuna_ui import DEFAULT_PORT, dashboard_url, serve_dashboard

__all__ = [
    "DEFAULT_PORT",
    "UI_ENV",
    "check_port",
    "dashboard_url",
    "run_ui",
    "serve_dashboard",
    "stop_server",
    "ui_command",
    "ui_url",
]
