"""MLflow tracking: experiment per study, run per trial, summary run, redaction, dashboard URL."""

from __future__ import annotations

import math
import socket
import sys

import pytest
import yaml

from layersearch.search import tracking
from layersearch.search.dashboards import mlflow_ui as ui
from layersearch.search.dashboards import run_ui, ui_command, ui_url
from layersearch.search.storage import redact
from layersearch.search.tracking import StudyTracker, find_experiment

STORAGE = "postgresql://optuna:s3cret@db.example/studies"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://user:secret@host/db", "postgresql://user:***@host/db"),
        ("mysql+pymysql://u:p@ss@host:3306/db?charset=utf8", "mysql+pymysql://u:***@host:3306/db?charset=utf8"),
        ("redis://:pw@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("postgresql://host/db?user=u&password=secret&sslmode=require",
         "postgresql://host/db?user=u&password=***&sslmode=require"),
        ("http://user@mlflow.local:5000", "http://user@mlflow.local:5000"),
        ("sqlite:///studies/sr1/optuna.db", "sqlite:///studies/sr1/optuna.db"),
        ("sqlite:////abs/studies/mlflow.db", "sqlite:////abs/studies/mlflow.db"),
        ("studies/sr1/journal.log", "studies/sr1/journal.log"),
    ],
)  # fmt: skip
def test_redact(url, expected):
    assert redact(url) == expected
    assert "secret" not in redact(url) and "pw@" not in redact(url)


# Creating an MLflow sqlite store runs its migrations (seconds): one store serves the whole module.
@pytest.fixture(scope="module")
def tracker(tmp_path_factory) -> StudyTracker:
    root = tmp_path_factory.mktemp("mlflow")
    return StudyTracker(
        f"sqlite:///{root}/studies/mlflow.db",
        "sr1",
        STORAGE,
        tags={"layersearch.random_weights": "true", "layersearch.task": "sr_x4"},
    )


def test_experiment_tags_and_artifact_location(tracker):
    exp = tracker.client.get_experiment(tracker.experiment_id)
    assert exp.name == "sr1"
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.tags["layersearch.random_weights"] == "true"
    assert exp.tags["layersearch.task"] == "sr_x4"
    assert exp.tags["layersearch.optuna_storage"] == "postgresql://optuna:***@db.example/studies"
    assert "RANDOM" in exp.tags["mlflow.note.content"]
    # Next to the database, absolute, so the UI finds artifacts whatever its cwd.
    db_dir = tracker.uri.removeprefix("sqlite:///").rsplit("/", 1)[0]
    assert exp.artifact_location == f"file://{db_dir}/mlartifacts/sr1"
    assert find_experiment(tracker.uri, "sr1") == tracker.experiment_id
    # Resuming the study reuses the experiment.
    again = StudyTracker(tracker.uri, "sr1", STORAGE, tags={"layersearch.random_weights": "true"})
    assert again.experiment_id == tracker.experiment_id


def test_find_experiment_missing(tracker, tmp_path):
    assert find_experiment(tracker.uri, "no-such-study") is None
    missing = tmp_path / "none" / "mlflow.db"
    assert find_experiment(f"sqlite:///{missing}", "sr1") is None
    assert not missing.exists()  # looking must not create a store


def test_trial_run_records_everything(tracker, tmp_path):
    config = {"content_layers": {"relu2_2": 1.0}, "style_layers": {}, "criterion": "mse"}
    run_id = tracker.start_trial(0, {"layer": "relu2_2", "content_weight": 1.0, "long": "x" * 7000}, config)
    for step, lpips in [(10, 0.5), (20, 0.4), (30, 0.35)]:
        tracker.log_metrics(
            step, {"lpips": lpips, "psnr_y": 20 + step / 10, "train/content/relu2_2": 1 / step}
        )
    preview = tmp_path / "preview.png"
    preview.write_bytes(b"\x89PNG\r\n\x1a\n")
    tracker.log_artifact(preview)
    tracker.end_trial("COMPLETE", {"lpips": 0.35, "ssim_y": 0.8})

    run = tracker.client.get_run(run_id)
    assert run.info.run_name == "#0 relu2_2"  # says which layers (issue 8)
    assert run.info.status == "FINISHED"
    assert run.data.params["layer"] == "relu2_2" and run.data.params["content_weight"] == "1.0"
    assert len(run.data.params["long"]) == tracking.MAX_PARAM_CHARS
    tags = run.data.tags
    assert tags["layersearch.trial"] == "0" and tags["layersearch.state"] == "COMPLETE"
    assert tags["layersearch.random_weights"] == "true"  # each run labelled, not only the experiment
    assert "s3cret" not in tags["layersearch.optuna_storage"]
    history = tracker.client.get_metric_history(run_id, "lpips")
    assert sorted((m.step, m.value) for m in history)[:3] == [(10, 0.5), (20, 0.4), (30, 0.35)]
    assert [m.step for m in tracker.client.get_metric_history(run_id, "train/content/relu2_2")] == [
        10,
        20,
        30,
    ]
    assert run.data.metrics["ssim_y"] == 0.8
    files = {f.path for f in tracker.client.list_artifacts(run_id)}
    assert files == {"layer_config.yaml", "preview.png"}
    local = tracker.client.download_artifacts(run_id, "layer_config.yaml", str(tmp_path))
    assert yaml.safe_load(open(local)) == config


@pytest.mark.parametrize(("state", "status"), [("FAIL", "FAILED"), ("PRUNED", "KILLED")])
def test_failed_and_pruned_trials(tracker, state, status):
    run_id = tracker.start_trial(1 if state == "FAIL" else 2, {"layer": "relu5_4"}, {})
    tracker.end_trial(state, reason="loss was nan at step 5")
    run = tracker.client.get_run(run_id)
    assert run.info.status == status
    assert run.data.tags["layersearch.state"] == state
    assert run.data.tags["layersearch.reason"] == "loss was nan at step 5"


def test_nonfinite_metrics_become_a_tag(tracker):
    run_id = tracker.start_trial(3, {}, {})
    tracker.log_metrics(1, {"lpips": math.nan, "train/total": math.inf, "psnr_y": 21.0})
    tracker.end_trial("FAIL")
    run = tracker.client.get_run(run_id)
    assert run.data.metrics == {"psnr_y": 21.0}
    assert "lpips=nan@1" in run.data.tags["layersearch.nonfinite"]
    assert "train/total=inf@1" in run.data.tags["layersearch.nonfinite"]


def test_summary_run_is_replaced(tracker, tmp_path):
    one = [{"content_layers": {"relu2_2": 1.0}, "provenance": {"trial": 0, "study": "sr1"}}]
    first = tracker.log_summary(one, [{"trial": 0, "lpips": 0.35, "psnr_y": 23.0}], STORAGE)
    assert {f.path for f in tracker.client.list_artifacts(first)} == {"best.yaml", "pareto.csv", "pareto.md"}

    front = [
        {"content_layers": {k: 1.0}, "provenance": {"trial": n}} for n, k in [(0, "relu2_2"), (2, "relu5_4")]
    ]
    table = [{"trial": 0, "lpips": 0.35, "psnr_y": 23.0}, {"trial": 2, "lpips": 0.4, "psnr_y": 24.5}]
    second = tracker.log_summary(front, table, STORAGE, extra_params={"sampler": "TPESampler"})

    summaries = tracker.client.search_runs([tracker.experiment_id], "tags.`layersearch.summary` = 'true'")
    assert [r.info.run_id for r in summaries] == [second]
    run = summaries[0]
    assert run.info.run_name == "summary" and run.info.status == "FINISHED"
    assert run.data.metrics == {"lpips": 0.35, "psnr_y": 23.0}
    assert run.data.params == {"sampler": "TPESampler"}
    assert run.data.tags["layersearch.optuna_storage"] == redact(STORAGE)
    pareto = {f.path for f in tracker.client.list_artifacts(second, "pareto")}
    assert pareto == {"pareto/trial_0.yaml", "pareto/trial_2.yaml"}
    csv_text = open(tracker.client.download_artifacts(second, "pareto.csv", str(tmp_path))).read()
    assert csv_text.splitlines() == ["trial,lpips,psnr_y", "0,0.35,23.0", "2,0.4,24.5"]
    md = open(tracker.client.download_artifacts(second, "pareto.md", str(tmp_path))).read()
    assert md.splitlines()[0] == "| trial | lpips | psnr_y |"
    # The summary is not a trial.
    assert all(r.info.run_name.startswith("#") for r in tracker.trial_runs())


def test_ui_url_and_command():
    assert ui_url(5000, "7") == "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    assert ui_url(5001, None) == "http://127.0.0.1:5001/"
    assert ui_url(5000, "7", run_id="abc").endswith("/experiments/7/runs/abc?workflowType=machine_learning")
    cmd = ui_command("sqlite:///studies/mlflow.db", 5002)
    assert cmd[:4] == [sys.executable, "-m", "mlflow", "server"]
    assert cmd[cmd.index("--backend-store-uri") + 1] == "sqlite:///studies/mlflow.db"
    assert cmd[cmd.index("--port") + 1] == "5002" and cmd[cmd.index("--host") + 1] == "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_ui_prints_study_url_and_stops(tracker, monkeypatch, capsys):
    # A stand-in server: starting MLflow's takes many seconds; run_ui's own logic is what is tested here.
    monkeypatch.setattr(
        ui, "ui_command", lambda *a, **k: [sys.executable, "-c", "import time; time.sleep(60)"]
    )
    port = _free_port()
    assert run_ui(tracker.uri, "sr1", port=port, open_for_seconds=0.2) == 0
    out = capsys.readouterr().out
    assert ui_url(port, tracker.experiment_id) in out
    assert run_ui(tracker.uri, "nope", port=port, open_for_seconds=0.2) == 0
    out = capsys.readouterr().out
    assert "'nope' not found" in out and f"http://127.0.0.1:{port}/\n" in out.replace("   (", "\n")


def test_run_ui_redacts_uri(monkeypatch, capsys):
    monkeypatch.setattr(ui, "ui_command", lambda *a, **k: [sys.executable, "-c", "pass"])
    monkeypatch.setattr(ui, "find_experiment", lambda uri, name: None)
    run_ui("postgresql://u:hunter2@db/mlflow", None, port=_free_port(), open_for_seconds=5)
    out = capsys.readouterr().out
    assert "hunter2" not in out and "postgresql://u:***@db/mlflow" in out


def test_run_ui_port_taken():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(ValueError, match="already in use"):
            run_ui("sqlite:///unused.db", None, port=s.getsockname()[1])


def test_trial_run_names_say_which_layers():
    from layersearch.search.tracking import trial_run_name

    assert trial_run_name(12, {"content_layers": {"relu2_2": 1.0, "relu4_3": 0.5}}) == "#12 relu2_2+relu4_3"
    assert trial_run_name(0, {"content_layers": {"relu2_2": 1.0}}, baseline="johnson_sr") == "#0 johnson_sr"
    assert trial_run_name(3, {"content_layers": {}, "style_layers": {"relu1_2": 1.0}, "pixel_weight": 1.0}) == (
        "#3 style:relu1_2+pixel")
    assert trial_run_name(7, {"content_layers": {"relu5_3": 1.0}}, retry_of=4) == "#7 relu5_3 (retry of #4)"
    assert trial_run_name(5, None) == "#5 infeasible"


def test_artifacts_go_where_asked_and_a_database_store_needs_them(tmp_path):
    assert tracking.artifact_location_for("sqlite:///x/mlflow.db", "s", str(tmp_path / "art")) == (
        (tmp_path / "art" / "s").as_uri())
    assert tracking.artifact_location_for("postgresql://u:p@h/db", "s", "s3://bucket/runs/") == "s3://bucket/runs/s"
    assert tracking.artifact_location_for("http://mlflow:5000", "s") is None
    with pytest.raises(tracking.TrackingError) as err:
        StudyTracker("postgresql://optuna:s3cret@127.0.0.1:9/mlflow", "s", STORAGE)
    assert "set tracking.artifacts" in str(err.value) and "s3cret" not in str(err.value)


def test_database_tracking_store_unreachable_is_one_redacted_line(tmp_path):
    with pytest.raises(tracking.TrackingError) as err:
        StudyTracker("postgresql://optuna:s3cret@127.0.0.1:9/mlflow", "s", STORAGE, artifacts=str(tmp_path))
    assert "cannot open tracking store postgresql://optuna:***@127.0.0.1:9/mlflow" in str(err.value)
    assert "s3cret" not in str(err.value) and "\n" not in str(err.value)


def test_a_tolerated_mlflow_error_warns_once(tracker, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("connection reset for postgresql://optuna:s3cret@db/mlflow")

    monkeypatch.setattr(tracker.client, "create_run", broken)
    with pytest.warns(UserWarning, match="MLflow error in start_trial") as caught:
        assert tracker.start_trial(1, {}, {}) is None
        tracker.log_metrics(2, {"lpips": 0.3})  # no open run: nothing logged, no second warning
        tracker.end_trial("COMPLETE", {"lpips": 0.3})
    assert len(caught) == 1 and "s3cret" not in str(caught[0].message)


def test_a_run_created_twice_by_a_lost_answer_is_one_run(tracker, monkeypatch):
    # A server restarted mid-call: the first create was committed but its answer lost, and the client sent it
    # again (MLflow's http client does; so does the retry of a database store). Seen in test_blips.
    real = tracker.client.create_run

    def twice(*args, **kwargs):
        real(*args, **kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(tracker.client, "create_run", twice)
    run_id = tracker.start_trial(41, {"a": 1}, {"content_layers": {}})
    tracker.end_trial("COMPLETE", {"lpips": 0.3})
    runs = tracker.client.search_runs([tracker.experiment_id], "tags.`layersearch.trial` = '41'")
    assert [r.info.run_id for r in runs] == [run_id]
    assert runs[0].data.metrics == {"lpips": 0.3}
