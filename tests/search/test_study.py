"""The sweep, checked from the outside: Optuna's and MLflow's own APIs read back what it recorded."""

from __future__ import annotations

import time

import mlflow
import optuna
import pytest
import torch
import yaml
from helpers import one_error_line, run_cli, smoke

from layersearch import PerceptualLoss
from layersearch.cli import main
from layersearch.trial.tasks import SuperResolution
from layersearch.trial.train import precision_used, resolve_device

SMOKE = ["preset=smoke"]


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    # One tracking store for the in-process sweeps: creating one costs seconds of schema migrations.
    return f"sqlite:///{tmp_path_factory.mktemp('tracking')}/mlflow.db"


@pytest.mark.slow
def test_smoke_sweep_resume_and_export_through_console_script(tmp_path):
    first = run_cli(["sweep", *SMOKE, "study.name=s1", "study.n_trials=3"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "RANDOM WEIGHTS" in first.stdout

    storage = f"sqlite:///{tmp_path}/studies/s1/optuna.db"
    study = optuna.load_study(study_name="s1", storage=storage)
    trials = study.get_trials()
    finished = [
        t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    assert len(finished) == 3
    assert study.user_attrs["objectives"] == ["lpips", "psnr_y"]
    # The literature baselines that fit sr_relu ran first, tagged.
    assert trials[0].user_attrs["baseline"] == "johnson_sr"
    assert trials[0].params["use_relu2_2"] is True
    assert trials[0].user_attrs["layer_config"]["content_layers"] == {"relu2_2": 1.0}

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/studies/mlflow.db")
    experiment = client.get_experiment_by_name("s1")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id], "tags.`layersearch.trial` != ''")
    by_trial = {int(r.data.tags["layersearch.trial"]): r for r in runs}
    assert sorted(by_trial) == [t.number for t in trials]
    for t in trials:
        run = by_trial[t.number]
        assert run.data.tags["layersearch.random_weights"] == "true"
        assert run.data.tags["layersearch.precision"] == precision_used(smoke("trainer.precision=auto").trainer,
                                                                                  resolve_device("auto"))
        assert {k: run.data.params[k] for k in t.params} == {k: str(v) for k, v in t.params.items()}
        if t.state == optuna.trial.TrialState.COMPLETE:
            for metric in ("lpips", "psnr_y"):
                steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
                assert {2, 4} <= set(steps), (metric, steps)
            assert run.data.metrics["lpips"] == pytest.approx(t.values[0])

    # A higher n_trials resumes: the three trials stay, one more runs.
    second = run_cli(["sweep", *SMOKE, "study.name=s1", "study.n_trials=4"], tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    again = optuna.load_study(study_name="s1", storage=storage).get_trials()
    assert [t.number for t in again[:3]] == [t.number for t in trials]
    assert [t.datetime_start for t in again[:3]] == [t.datetime_start for t in trials]
    assert sum(t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL for t in again) == 4
    # Rerunning a finished study does nothing.
    third = run_cli(["sweep", *SMOKE, "study.name=s1", "study.n_trials=4"], tmp_path)
    assert third.returncode == 0 and "nothing to run" in third.stdout
    assert len(optuna.load_study(study_name="s1", storage=storage).trials) == len(again)

    exported = run_cli(["export", *SMOKE, "study.name=s1"], tmp_path)
    assert exported.returncode == 0, exported.stderr[-2000:]
    best_file = tmp_path / "studies/s1/best.yaml"
    best = yaml.safe_load(best_file.read_text())
    assert best_file.read_text().startswith("# RANDOM WEIGHTS")
    assert best["provenance"]["study"] == "s1" and best["provenance"]["random_weights"] is True
    complete = [t for t in again if t.state == optuna.trial.TrialState.COMPLETE]
    winner = min(complete, key=lambda t: t.values[0])
    assert best["provenance"]["trial"] == winner.number
    assert best["provenance"]["metrics"]["lpips"] == pytest.approx(winner.values[0])
    loss_fn = PerceptualLoss.from_config(best_file)
    images = torch.rand(1, 3, 32, 32)
    assert loss_fn(images, images).item() == 0.0


def _scripted_evaluate(monkeypatch, values_by_call):
    """Make SuperResolution.evaluate return scripted lpips values, one per call, in order."""
    calls = iter(values_by_call)

    def evaluate(self, model):
        value = next(calls)
        return {"lpips": value, "psnr_y": 30.0 - 10 * value, "ssim_y": 1.0 - value}

    monkeypatch.setattr(SuperResolution, "evaluate", evaluate)


@pytest.mark.parametrize("objectives", ["[lpips]", "[lpips,psnr_y]"])
def test_pruning_prunes_a_bad_trial(tmp_path, monkeypatch, mlflow_uri, objectives):
    monkeypatch.chdir(tmp_path)
    # Two good trials (2 evaluations each), then a trial whose first evaluation is far worse.
    _scripted_evaluate(monkeypatch, [0.1, 0.1, 0.1, 0.1, 0.9, 0.9])
    name = f"prune{len(objectives)}"
    code = main(
        [
            "sweep",
            *SMOKE,
            f"study.name={name}",
            "study.n_trials=3",
            "study.pruner=median",
            "study.n_startup_trials=1",
            f"study.objectives={objectives}",
            f"tracking.uri={mlflow_uri}",
            "search_space.baselines=[]",
        ]
    )
    assert code == 0
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/studies/{name}/optuna.db")
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2 + [optuna.trial.TrialState.PRUNED]
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
    exp = client.get_experiment_by_name(name)
    pruned = client.search_runs([exp.experiment_id], "tags.`layersearch.state` = 'PRUNED'")
    assert len(pruned) == 1 and "worse than the median" in pruned[0].data.tags["layersearch.reason"]


def test_failing_trials_are_recorded_and_stop_the_sweep(tmp_path, monkeypatch, mlflow_uri, capsys):
    monkeypatch.chdir(tmp_path)
    # lr=1e30 makes every training blow up: each trial is told FAIL with its reason, and the sweep stops
    # after a few in a row instead of looping (failed trials do not count towards n_trials).
    code = main(["sweep", *SMOKE, "study.name=nan", "study.n_trials=2", "trainer.lr=1e30",
                 f"tracking.uri={mlflow_uri}", "search_space.baselines=[]"])
    assert code == 2
    assert "trials failed in a row" in one_error_line(capsys)
    study = optuna.load_study(study_name="nan", storage=f"sqlite:///{tmp_path}/studies/nan/optuna.db")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 5
    assert all("training loss became" in t.user_attrs["fail_reason"] for t in study.trials)
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("nan").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FAILED"] * 5


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["study.sampler=cmaes"],
            "unknown study.sampler 'cmaes'; choose one of: tpe, random, gp, nsga2, qmc, grid",
        ),
        (["study.pruner=sha"], "unknown study.pruner 'sha'"),
        (["study.objectives=[fid]"], "unknown objective metric 'fid'"),
        (["study.objectives=[content_lpips]"], "unknown objective metric 'content_lpips'"),
        (["study.pruner=hyperband"], "hyperband needs a single objective"),
        (["study.sampler=grid"], "grid needs a space without {low, high} ranges"),
        (["search_space.content.candidates=[relu9_9]"], "unknown layer 'relu9_9'"),
        (["search_space.arch=resnet34"], "unknown loss network architecture 'resnet34'"),
        (["search_space.content.min_layers=9"], "min_layers <= the 5 candidates"),
        (["search_space.content.weight={low:1.0,high:1.0}"], "empty or invalid range"),
        (["study.n_trials=0"], "study.n_trials must be >= 1"),
    ],
)
def test_bad_sweep_input_is_one_line(tmp_path, monkeypatch, capsys, overrides, message):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", *SMOKE, "study.name=bad", *overrides]) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "studies" / "bad").exists() or not any((tmp_path / "studies" / "bad").iterdir())


def test_unreachable_storage_fails_fast_without_password(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    code = main(
        ["sweep", *SMOKE, "study.name=x", "study.storage=postgresql://alice:s3cret@127.0.0.1:9/optuna"]
    )
    assert code == 2 and time.monotonic() - start < 30
    line = one_error_line(capsys)
    assert "cannot" in line and "s3cret" not in line and "alice:***@127.0.0.1" in line


def test_export_bad_input(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["export", "study.name=missing"]) == 2
    assert "no study storage" in one_error_line(capsys)
    # A study that exists but has no complete trial.
    storage = f"sqlite:///{tmp_path}/studies/empty/optuna.db"
    (tmp_path / "studies" / "empty").mkdir(parents=True)
    study = optuna.create_study(study_name="empty", storage=storage, directions=["minimize", "maximize"])
    study.set_user_attr("objectives", ["lpips", "psnr_y"])
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    assert main(["export", "study.name=empty"]) == 2
    assert "has no complete trial" in one_error_line(capsys)
    assert main(["export", "study.name=other", f"study.storage={storage}"]) == 2
    assert "no study named 'other'" in one_error_line(capsys)
    # A complete trial, but an output path that cannot be written: nothing is left behind.
    trial = study.ask()
    trial.set_user_attr(
        "layer_config",
        {"loss_net": {"arch": "vgg16", "weights": "random"}, "content_layers": {"relu2_2": 1.0}},
    )
    study.tell(trial, [0.2, 25.0])
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["export", "study.name=empty", f"export.out={blocker}/best.yaml"]) == 2
    assert "cannot write" in one_error_line(capsys)
    assert main(["export", "study.name=empty", "export.metric=ssim_y"]) == 2
    assert "not an objective" in one_error_line(capsys)
    assert main(["export", "study.name=empty", "export.format=basicsr"]) == 0
    block = yaml.safe_load((tmp_path / "studies/empty/best.basicsr.yml").read_text())
    assert block["perceptual_opt"]["layer_weights"] == {"relu2_2": 1.0}
    assert block["perceptual_opt"]["vgg_type"] == "vgg16" and block["perceptual_opt"]["criterion"] == "l2"
    assert main(["export", "study.name=empty", "export.pareto=true"]) == 0
    rows = (tmp_path / "studies/empty/pareto/pareto.csv").read_text().splitlines()
    assert rows[0] == "trial,baseline,lpips,psnr_y,random_weights,file"
    assert rows[1].endswith(",True,trial_1.yaml")
    assert PerceptualLoss.from_config(tmp_path / "studies/empty/pareto/trial_1.yaml").config.content_layers == {
        "relu2_2": 1.0
    }
