"""`layersearch dashboard`: optuna-dashboard for a study's storage (SQLite, journal, PostgreSQL), checked
through its API and, in a slow test, in headless Chromium as a user sees it."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import tempfile
import urllib.request
import warnings

import optuna
import pytest
from conftest import PG_PASSWORD
from helpers import Watched, console_script, free_port, one_error_line, storage_args

from layersearch.cli import main
from layersearch.search.dashboards import dashboard_url
from layersearch.search.storage import open_storage, storage_lock

NAME = "sr-layers-7"



def _make_study(url: str, n: int = 3) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        storage = open_storage(url, **storage_args())
        with storage_lock(url):
            study = optuna.create_study(study_name=NAME, storage=storage, directions=["minimize", "maximize"])
    for i in range(n):
        trial = study.ask({"w_relu2_2": optuna.distributions.FloatDistribution(0.1, 10.0, log=True)})
        study.tell(trial, [0.1 + i / 10, 30.0 - i])


def _url_of(kind: str, tmp_path, postgres_db: str | None) -> tuple[list[str], str]:
    if kind == "postgres":
        return [f"study.storage={postgres_db}"], postgres_db
    if kind == "journal":
        return ["study.workers=2"], f"journal:///{tmp_path}/studies/{NAME}/journal.log"
    return [], f"sqlite:///{tmp_path}/studies/{NAME}/optuna.db"


def _api(base: str, path: str):
    try:
        with urllib.request.urlopen(base + path, timeout=5) as reply:
            return json.load(reply)
    except OSError:
        return None


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgres"])
def test_dashboard_serves_the_study_of_each_storage_kind(kind, tmp_path, request):
    postgres_db = request.getfixturevalue("postgres_db") if kind == "postgres" else None
    overrides, url = _url_of(kind, tmp_path, postgres_db)
    _make_study(url)
    port = free_port()
    with Watched([console_script(), "dashboard", f"study.name={NAME}", f"port={port}", *overrides], tmp_path) as cli:
        opened = cli.wait_for(lambda: re.search(r"Open (http://\S+)", cli.output), 120, "the dashboard's URL")
        base = f"http://127.0.0.1:{port}"
        studies = cli.wait_for(lambda: _api(base, "/api/studies"), 60, "the dashboard's API")
        [study] = [s for s in studies["study_summaries"] if s["study_name"] == NAME]
        assert opened.group(1) == dashboard_url(port, study["study_id"])
        detail = _api(base, f"/api/studies/{study['study_id']}")
        assert [t["number"] for t in detail["trials"]] == [0, 1, 2]
    assert PG_PASSWORD not in cli.output
    if kind == "postgres":
        assert "layersearch:***@127.0.0.1" in cli.output


def test_a_missing_study_and_a_taken_port_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["dashboard", "study.name=nothing"]) == 2
    assert "no study storage at" in one_error_line(capsys)
    _make_study(f"sqlite:///{tmp_path}/studies/{NAME}/optuna.db")
    assert main(["dashboard", "study.name=other", f"study.storage=sqlite:///{tmp_path}/studies/{NAME}/optuna.db"]) == 2
    assert "no study named 'other'" in one_error_line(capsys)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["dashboard", f"study.name={NAME}", f"port={taken.getsockname()[1]}"]) == 2
    assert "already in use" in one_error_line(capsys)


@pytest.mark.slow
def test_dashboard_shows_the_study_and_its_trials_in_headless_chromium(tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    _make_study(f"sqlite:///{tmp_path}/studies/{NAME}/optuna.db", n=4)
    port = free_port()
    with Watched([console_script(), "dashboard", f"study.name={NAME}", f"port={port}"], tmp_path) as cli:
        url = cli.wait_for(lambda: re.search(r"Open (http://\S+)", cli.output), 120, "the dashboard's URL").group(1)
        cli.wait_for(lambda: _api(f"http://127.0.0.1:{port}", "/api/studies"), 60, "the dashboard's API")
        with tempfile.TemporaryDirectory() as profile:
            dom = subprocess.run(
                [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--no-first-run", f"--user-data-dir={profile}",
                 "--virtual-time-budget=15000", "--window-size=1400,900", "--dump-dom", url],
                capture_output=True, text=True, timeout=180, start_new_session=True).stdout
    text = " ".join(re.sub(r"<[^>]+>", " ", re.sub(r"<(style|script)[^>]*>.*?</\1>", " ", dom, flags=re.S)).split())
    # The study's page as rendered: its name, the Pareto front of two objectives, the best trial, a parameter.
    for shown in (f"{NAME} (id=", "Pareto Front", "Best Trial (number=0)", "w_relu2_2"):
        assert shown in text, text[:3000]
