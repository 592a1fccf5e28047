"""The user's Python function as the trial (`trial=python`), checked through Optuna's and MLflow's own APIs.

The functions live in tests/user_trainings.py and train nothing, so each sweep takes a second or two.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml
from helpers import one_error_line, storage_args
from optuna.trial import TrialState

import layersearch
from layersearch.cli import main
from layersearch.trial.train import resolve_device

FN = "trial=python"
BASE = ["preset=smoke", "study.objectives=[quality]", "study.directions=[minimize]", "trainer.steps=6"]  # + tracking.uri


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("USER_TRAININGS_LOG", str(tmp_path / "calls.jsonl"))
    # An absolute tracking URI: MLflow keeps one engine per URI per process, and a relative sqlite path would
    # keep pointing at the first test's folder.
    BASE[:] = [o for o in BASE if not o.startswith("tracking.uri=")] + [f"tracking.uri=sqlite:///{tmp_path}/studies/mlflow.db"]
    return tmp_path


def trials_of(tmp_path, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/studies/{name}/optuna.db").trials


def runs_of(tmp_path, name):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/studies/mlflow.db")
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], "tags.`layersearch.trial` != ''")
    return client, {int(r.data.tags["layersearch.trial"]): r for r in runs}


def test_a_function_sweep_runs_baselines_first_reports_and_records_everything(in_tmp):
    args = ["sweep", *BASE, FN, "trial.fn=user_trainings:steady", "study.name=fn", "study.n_trials=4",
            "study.pruner=none"]
    assert main(args) == 0
    trials = trials_of(in_tmp, "fn")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert trials[0].user_attrs["baseline"] == "johnson_sr"  # literature baselines still go first
    study = optuna.load_study(study_name="fn", storage=f"sqlite:///{in_tmp}/studies/fn/optuna.db")
    assert study.user_attrs["trial_kind"] == "python" and study.user_attrs["trial"] == "user_trainings:steady"
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE]
    calls = [json.loads(line) for line in (in_tmp / "calls.jsonl").read_text().splitlines()]
    assert [c["number"] for c in calls] == [0, 1, 2, 3]
    assert {c["steps"] for c in calls} == {6} and {c["seed"] for c in calls} == {0} and calls[0]["device"] == str(resolve_device("auto"))
    assert calls[0]["layers"] == ["relu2_2"]
    for t, call in zip(trials, calls, strict=True):
        expected = 0.1 + 0.01 * sum(int(n[4]) for n in call["layers"])
        assert t.values == [pytest.approx(expected)]
        assert call["dir"].endswith(f"studies/fn/trials/{t.number}")
    client, runs = runs_of(in_tmp, "fn")
    run = runs[2]
    assert {m.step for m in client.get_metric_history(run.info.run_id, "quality")} == {2, 4, 6}
    assert run.data.metrics["psnr_y"] == pytest.approx(30 - 10 * trials[2].values[0])  # extra returned metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"notes.txt", "layer_config.yaml"} <= artifacts  # Trial.dir is logged to the run
    assert run.data.tags.get("layersearch.precision") is None  # only the built-in training knows its precision


def test_median_pruning_stops_poor_trials_of_a_function(in_tmp):
    args = ["sweep", *BASE, FN, "trial.fn=user_trainings:cleans_up_when_pruned", "study.name=prune",
            "study.n_trials=8", "study.n_startup_trials=2", "search_space.baselines=[]", "study.sampler=random"]
    assert main(args) == 0
    trials = trials_of(in_tmp, "prune")
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 8
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, "a function reporting worse values than the median must be pruned"
    for t in pruned:
        # It caught Pruned, cleaned up and returned: recorded as pruned all the same.
        assert (in_tmp / "studies/prune/trials" / str(t.number) / "cleaned").read_text() == "yes"
    _, runs = runs_of(in_tmp, "prune")
    assert all(runs[t.number].info.status == "KILLED" and "worse than the median" in
               runs[t.number].data.tags["layersearch.reason"] for t in pruned)


@pytest.mark.parametrize(("fn", "reason"), [
    ("nan_metric", "metric 'quality' is nan at step 2"),
    ("backwards", "report steps must increase: step 2 after step 4"),
    ("missing_objective", "returned no value for objective(s) quality (it returned psnr_y)"),
    ("returns_none", "returned NoneType, not a mapping"),
    ("boom", "ValueError: boom in the user's code"),
])
def test_a_failing_function_fails_its_trial_with_the_reason_and_the_sweep_goes_on(in_tmp, fn, reason, capsys):
    # Five failures in a row stop the sweep (exit 2, the last reason named); each trial is recorded first.
    args = ["sweep", *BASE, FN, f"trial.fn=user_trainings:{fn}", "study.name=bad", "study.n_trials=2",
            "search_space.baselines=[]"]
    assert main(args) == 2
    line = one_error_line(capsys)
    assert "5 trials failed in a row" in line and reason in line, line
    trials = trials_of(in_tmp, "bad")
    assert [t.state for t in trials] == [TrialState.FAIL] * 5
    assert all(reason in t.user_attrs["fail_reason"] for t in trials)
    client, runs = runs_of(in_tmp, "bad")
    assert runs[0].info.status == "FAILED" and reason in runs[0].data.tags["layersearch.reason"]
    if fn == "boom":  # the traceback is kept with the trial and its run
        text = (in_tmp / "studies/bad/trials/0/traceback.txt").read_text()
        assert "Traceback" in text and "user_trainings.py" in text and "boom in the user's code" in text
        assert "traceback.txt" in {a.path for a in client.list_artifacts(runs[0].info.run_id)}


def test_a_failure_between_successes_does_not_stop_the_sweep(in_tmp, tmp_path):
    (tmp_path / "flaky_user.py").write_text(
        "import user_trainings\n"
        "def flaky(t):\n"
        "    if t.number == 1:\n"
        "        raise RuntimeError('only trial 1 breaks')\n"
        "    return user_trainings.steady(t)\n")
    args = ["sweep", *BASE, FN, f"trial.fn={tmp_path}/flaky_user.py:flaky", "study.name=flaky", "study.n_trials=3",
            "study.pruner=none"]
    assert main(args) == 0
    states = [t.state for t in trials_of(in_tmp, "flaky")]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]


BAD_INPUT = {
    "not importable": (["trial.fn=no_such_module_xyz:train"], "does not import: ModuleNotFoundError"),
    "no attribute": (["trial.fn=user_trainings:nope"], "user_trainings has no attribute 'nope'"),
    "not callable": (["trial.fn=user_trainings:NOT_CALLABLE"], "is not callable (it is a int)"),
    "wrong arguments": (["trial.fn=user_trainings:two_args"], "must take one argument, the trial handle"),
    "no fn": ([], "trial=python needs trial.fn=module:function"),
    "not module:function": (["trial.fn=user_trainings"], "expected module:function"),
    "missing file": (["trial.fn=nowhere/train.py:train"], "no such file nowhere/train.py"),
    "no objectives": (["study.objectives=null", "trial.fn=user_trainings:steady"], "trial=python needs study.objectives"),
    "no direction": (["study.directions=null", "trial.fn=user_trainings:steady"],
                     "objective 'quality' is not a metric layersearch knows"),
    "bad direction": (["study.directions=[up]", "trial.fn=user_trainings:steady"], "'up' is not minimize or maximize"),
    "known metric, other direction": (["study.objectives=[lpips]", "study.directions=[maximize]",
                                       "trial.fn=user_trainings:steady"], "lpips is always minimized"),
    "unknown kind": (["trial.kind=remote"], "unknown trial kind 'remote'"),
}


@pytest.mark.parametrize("case", BAD_INPUT, ids=list(BAD_INPUT))
def test_bad_function_input_is_one_line_and_creates_nothing(in_tmp, capsys, case):
    overrides, message = BAD_INPUT[case]
    replaced = {o.split("=")[0] for o in overrides}
    base = [o for o in BASE if o.split("=")[0] not in replaced]
    assert main(["sweep", *base, FN, "study.name=refused", *overrides]) == 2
    line = one_error_line(capsys)
    assert message in line, line
    assert not (in_tmp / "studies").exists() or not any((in_tmp / "studies").rglob("*")), \
        list((in_tmp / "studies").rglob("*"))


def test_the_python_api_returns_the_result_the_cli_prints(in_tmp):
    import user_trainings

    result = layersearch.sweep(user_trainings.steady, overrides=[*BASE, "study.name=api", "study.n_trials=3",
                                                                 "study.pruner=none"])
    assert isinstance(result, layersearch.SweepResult)
    assert result.counts == {"complete": 3, "pruned": 0, "failed": 0, "repeats": 0}
    assert result.objectives == [("quality", "minimize")]
    best = min(t.values[0] for t in trials_of(in_tmp, "api"))
    assert min(row["quality"] for row in result.best_rows.values()) == pytest.approx(best)


def test_confirm_report_and_export_work_on_a_function_study(in_tmp, capsys):
    sweep = ["sweep", *BASE, FN, "trial.fn=user_trainings:steady", "study.name=conf", "study.n_trials=3",
             "study.pruner=none"]
    assert main(sweep) == 0
    (in_tmp / "calls.jsonl").unlink()
    common = [*BASE, FN, "trial.fn=user_trainings:steady", "study.name=conf"]
    assert main(["confirm", *common, "confirm.top_k=1", "confirm.seeds=2", "confirm.steps=8"]) == 0
    calls = [json.loads(line) for line in (in_tmp / "calls.jsonl").read_text().splitlines()]
    # The same function, at confirm's budget and with each of its seeds, once per (config, seed).
    assert {c["steps"] for c in calls} == {8} and sorted({c["seed"] for c in calls}) == [0, 1]
    assert all("/studies/conf/confirm/runs/trial_" in c["dir"] for c in calls)
    summary = json.loads((in_tmp / "studies/conf/confirm/confirm.json").read_text())
    assert summary["objectives"] == [["quality", "minimize"]] and summary["winner"]
    winner = next(c for c in summary["configs"] if c["key"] == summary["winner"])
    assert winner["mean"]["quality"] == pytest.approx(0.1 + 0.01 * sum(int(n[4]) for n in winner["layer_config"]
                                                                      ["content_layers"]) + 0.0005)
    assert main(["report", *common]) == 0
    assert (in_tmp / "studies/conf/report/index.html").exists()
    assert main(["export", *common]) == 0
    best = yaml.safe_load((in_tmp / "studies/conf/best.yaml").read_text())
    assert best["provenance"]["metrics"]["quality"] == min(t.values[0] for t in trials_of(in_tmp, "conf")
                                                           if t.state == TrialState.COMPLETE)
    layersearch.PerceptualLoss.from_config(in_tmp / "studies/conf/best.yaml")
    capsys.readouterr()
    # confirm with another kind of training is refused: its runs would mean something else.
    assert main(["confirm", *BASE, "study.name=conf"]) == 2
    assert "was run with trial=python" in one_error_line(capsys)


@pytest.mark.slow
def test_a_function_sweep_with_two_workers_gets_exactly_n_trials(in_tmp, monkeypatch):
    # Workers are new processes: they import the function by the name layersearch.sweep gives it.
    import user_trainings

    monkeypatch.setenv("PYTHONPATH", str(Path(user_trainings.__file__).parent))
    result = layersearch.sweep(user_trainings.steady, overrides=[*BASE, "study.name=two", "study.n_trials=6",
                                                                 "study.workers=2", "study.pruner=none"])
    assert result.counts["complete"] == 6
    from layersearch.search.storage import open_storage

    storage = open_storage(f"journal:///{in_tmp}/studies/two/journal.log", create=False, **storage_args())
    trials = optuna.load_study(study_name="two", storage=storage).trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 6
    assert len(list((in_tmp / "studies/two/logs").glob("worker-*.log"))) == 2  # two worker processes ran


def test_each_baseline_reruns_with_a_second_seed_to_measure_the_noise(in_tmp, capsys):
    args = ["sweep", *BASE, FN, "trial.fn=user_trainings:steady", "study.name=noise", "study.n_trials=3",
            "study.baseline_seeds=2", "study.pruner=none"]
    assert main(args) == 0
    out = capsys.readouterr().out
    trials = trials_of(in_tmp, "noise")
    first = [t for t in trials if "repeat_of" not in t.user_attrs]
    repeats = [t for t in trials if "repeat_of" in t.user_attrs]
    assert [t.user_attrs.get("baseline") for t in trials[:4]] == ["johnson_sr", "johnson_sr", "pixel", "pixel"]
    assert [(t.user_attrs["repeat_of"], t.user_attrs["seed"]) for t in repeats] == [(0, 1), (2, 1)]
    assert {t.user_attrs["seed"] for t in first} == {0}
    assert sum(t.state == TrialState.COMPLETE for t in first) == 3  # repeats are not counted in n_trials
    assert all(t.state == TrialState.COMPLETE for t in repeats)
    assert all(not t.intermediate_values for t in repeats)  # never judged by the pruner, nor part of its medians
    assert repeats[0].params == trials[0].params and repeats[0].values[0] == pytest.approx(trials[0].values[0] + 0.001)
    calls = [json.loads(line) for line in (in_tmp / "calls.jsonl").read_text().splitlines()]
    assert [c["seed"] for c in calls][:4] == [0, 1, 0, 1]  # the repeat trains with its own seed
    assert "3 complete, 0 pruned, 0 failed (+ 2 baseline seed repeats)" in out
    assert "seed noise (baselines rerun with another seed): quality: seed SD 0.000707 (df 2: 4 runs of 2 configs)" in out
    # pixel (0.100, 0.101) beats johnson_sr (0.120, 0.121) by far more than t(0.975, 2) * SD * sqrt(1 + 1/2).
    assert "best #2 (1 run) vs johnson_sr (2 seeds) on quality: -0.02050: better (" in out
    _, runs = runs_of(in_tmp, "noise")
    assert runs[1].info.run_name == "#1 johnson_sr, seed 1" and runs[1].data.tags["layersearch.repeat_of"] == "0"
    # Export and confirm take configs from first runs only.
    assert main(["confirm", *BASE, FN, "trial.fn=user_trainings:steady", "study.name=noise", "confirm.top_k=1",
                 "confirm.seeds=2", "confirm.steps=4"]) == 0
    summary = json.loads((in_tmp / "studies/noise/confirm/confirm.json").read_text())
    assert sorted(c["trial"] for c in summary["configs"]) == sorted({0, 2} | {summary["configs"][0]["trial"]})
