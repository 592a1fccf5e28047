"""`layersearch confirm`: candidates, settings, the summary's numbers, bad input, and runs read back from
Optuna, MLflow and the files (the kill -9 and parallel runs are in test_confirm_processes.py)."""

from __future__ import annotations

import json
import statistics

import mlflow
import numpy as np
import optuna
import pytest
import yaml
from helpers import one_error_line, smoke

from layersearch.cli import main
from layersearch.insight import confirm
from layersearch.search.tracking import StudyTracker
from layersearch.settings import settings_to_dict
from layersearch.trial.train import precision_used, resolve_device

MIN, MAX = "minimize", "maximize"


def layers(*names: str, weights: str = "random", pixel: float = 0.0, criterion: str = "mse") -> dict:
    return {"loss_net": {"arch": "vgg16", "weights": weights}, "content_layers": {n: 1.0 for n in names},
            "style_layers": {}, "content_weight": 1.0, "style_weight": 0.0, "pixel_weight": pixel, "tv_weight": 0.0,
            "criterion": criterion}


def make_study(root, trials, name="s", objectives=("lpips", "psnr_y"), random_weights=True, **attrs) -> optuna.Study:
    """A study as `layersearch sweep` leaves it, without training: ``trials`` = (values, layer_config, baseline)."""
    cfg = smoke()
    (root / "studies" / name).mkdir(parents=True, exist_ok=True)
    directions = [{"lpips": MIN, "psnr_y": MAX, "ssim_y": MAX}[m] for m in objectives]
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{root}/studies/{name}/optuna.db",
                                directions=directions)
    study.set_user_attr("objectives", list(objectives))
    study.set_user_attr("search_space", cfg.search_space["name"])
    study.set_user_attr("task", cfg.task.target)
    study.set_user_attr("search_space_config", settings_to_dict(cfg.search_space))
    if random_weights:
        study.set_user_attr("random_weights", True)
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    for values, layer_config, baseline in trials:
        user_attrs = {"layer_config": layer_config, **({"baseline": baseline} if baseline else {})}
        state = optuna.trial.TrialState.COMPLETE if values else optuna.trial.TrialState.PRUNED
        study.add_trial(optuna.trial.create_trial(state=state, values=values, user_attrs=user_attrs))
    return study


TRIALS = [  # (lpips, psnr_y): #2 dominates #0; the Pareto front is #3, #1, #2, #4 by lpips
    ((0.30, 20.0), layers("relu2_2"), "johnson_sr"),
    ((0.20, 22.0), layers("relu1_2", "relu3_3"), None),
    ((0.25, 25.0), layers("relu4_3"), None),
    ((0.10, 18.0), layers("relu5_3"), None),
    ((0.40, 30.0), layers(pixel=1.0), None),
    (None, layers(pixel=1.0), "pixel"),  # pruned: no short-run values, not retrained
]


def test_candidates_are_the_pareto_front_by_the_primary_objective_then_the_baselines(tmp_path):
    study = make_study(tmp_path, TRIALS)
    objectives = [("lpips", MIN), ("psnr_y", MAX)]
    picked = confirm.select_candidates(study, objectives, top_k=2)
    assert [(c.key, c.baseline, c.label) for c in picked] == [
        ("trial_3", None, "#3 relu5_3"), ("trial_1", None, "#1 relu1_2+relu3_3"), ("trial_0", "johnson_sr", "#0 johnson_sr")]
    assert picked[0].short_run == {"lpips": 0.10, "psnr_y": 18.0}
    # A top_k beyond the front takes the dominated trials next, best lpips first; no config twice.
    assert [c.trial for c in confirm.select_candidates(study, objectives, top_k=10)] == [3, 1, 2, 4, 0]


def test_candidates_of_a_single_objective_study_go_by_its_value(tmp_path):
    trials = [((21.0,), layers("relu2_2"), "johnson_sr"), ((25.0,), layers("relu1_2"), None),
              ((23.0,), layers("relu3_3"), None)]
    study = make_study(tmp_path, trials, objectives=("psnr_y",))
    picked = confirm.select_candidates(study, [("psnr_y", MAX)], top_k=1)
    assert [c.key for c in picked] == ["trial_1", "trial_0"]


def test_a_config_found_again_is_one_candidate(tmp_path):
    # The offline demo's top 5 were five pixel losses: the race must not race a config against itself.
    trials = [((23.0,), layers(pixel=1.0), "pixel"), ((23.0,), layers(pixel=1.0), None), ((21.0,), layers("relu2_2"), None),
              ((22.0,), layers(pixel=1.0), None), ((20.0,), layers("relu2_2"), "johnson_sr"), ((19.0,), layers("relu1_2"), None)]
    study = make_study(tmp_path, trials, objectives=("psnr_y",))
    picked = confirm.select_candidates(study, [("psnr_y", MAX)], top_k=3)
    # top 3 distinct configs: pixel (#0, the earlier of the tie), relu2_2 (#2), relu1_2 (#5); johnson_sr is #2's config
    assert [c.trial for c in picked] == [0, 2, 5]


def test_candidates_are_labelled_like_the_sweep_runs(tmp_path):
    # One naming rule (search.tracking.trial_run_name) for sweep runs, confirm rows and the report.
    study = make_study(tmp_path, [((0.2, 30.0), layers("relu2_2", "relu4_3"), None)])
    (picked,) = confirm.select_candidates(study, [("lpips", MIN), ("psnr_y", MAX)], top_k=1)
    assert picked.label == "#0 relu2_2+relu4_3"


def test_settings_default_to_ten_times_the_trial_and_keep_its_evaluation_count():
    s = confirm.read_plan(smoke())  # smoke trainer: 4 steps, eval every 2
    assert (s.top_k, s.seeds, s.steps, s.eval_every, s.alpha) == (5, (0, 1, 2), 40, 20, 0.05)
    s = confirm.read_plan(smoke("confirm.seeds=2", "confirm.steps=7", "confirm.first_seed=3"))
    assert (s.seeds, s.steps, s.eval_every) == ((3, 4), 7, 4)


def _candidate(key, trial, baseline, short):
    return confirm.Candidate(key, trial, baseline, f"#{trial} x", layers("relu2_2"), short)


def _rows(lpips, psnr, images=4, spread=0.02, seed=0):
    """Per-seed rows with per-image scores around the given per-seed means (a fixed image pattern plus noise)."""
    rng = np.random.default_rng(seed)
    pattern = np.linspace(-1, 1, images)
    rows = []
    for s, (lp, ps) in enumerate(zip(lpips, psnr, strict=True)):
        lp_images = lp + spread * pattern + rng.normal(0, spread / 10, images)
        ps_images = ps + 10 * spread * pattern + rng.normal(0, spread, images)
        rows.append({"seed": s, "lpips": float(lp_images.mean()), "psnr_y": float(ps_images.mean()),
                     "per_image": {"lpips": lp_images.tolist(), "psnr_y": ps_images.tolist()},
                     "images": [f"img{i}.png" for i in range(images)]})
    return rows


def test_summary_races_on_per_image_blocks_and_says_each_verdict():
    plan = confirm.ConfirmPlan(top_k=2, seeds=(0, 1, 2), steps=40, eval_every=20, alpha=0.05, first_test=5)
    objectives = [("lpips", MIN), ("psnr_y", MAX)]
    candidates = [_candidate("trial_3", 3, None, {"lpips": 0.10, "psnr_y": 18.0}),
                  _candidate("trial_1", 1, None, {"lpips": 0.20, "psnr_y": 22.0}),
                  _candidate("trial_0", 0, "johnson_sr", {"lpips": 0.30, "psnr_y": 20.0}),
                  _candidate("trial_7", 7, None, {"lpips": 0.25, "psnr_y": 21.0})]
    per_seed = {"trial_3": _rows([0.105, 0.104, 0.106], [25.0, 25.4, 25.2], seed=1),  # about #1's equal
                "trial_1": _rows([0.110, 0.112, 0.109], [26.0, 26.5, 26.1], seed=2),
                # far worse: dropped after the second seed, never trained with the third
                "trial_0": _rows([0.300, 0.299], [26.0, 26.6], seed=3),
                "trial_7": _rows([0.20], [21.0], seed=4) + [{"seed": 1, "failed": "training loss became nan at step 9"}]}
    out = confirm.summarise("s", True, plan, objectives, candidates, per_seed)

    assert set(out) >= {"study", "random_weights", "steps", "seeds", "primary", "objectives", "configs",
                        "rank_correlation", "winner", "race", "test_description"}
    assert (out["study"], out["random_weights"], out["steps"], out["seeds"], out["primary"]) == ("s", True, 40, [0, 1, 2], "lpips")
    by_key = {c["key"]: c for c in out["configs"]}
    assert by_key["trial_1"]["mean"]["lpips"] == pytest.approx(statistics.fmean(r["lpips"] for r in per_seed["trial_1"]))
    assert by_key["trial_1"]["std"]["psnr_y"] == pytest.approx(statistics.stdev(r["psnr_y"] for r in per_seed["trial_1"]))
    assert by_key["trial_0"]["n_seeds"] == 2 and by_key["trial_7"]["n_seeds"] == 1

    race = out["race"]
    assert (race["blocks"], race["images"], race["looks"], race["alpha"], race["first_test"]) == ("seed x image", 4, 2, 0.05, 5)
    assert race["level"] == pytest.approx(0.025)
    assert (race["runs"], race["runs_max"], race["runs_saved"]) == (10, 12, 2)
    verdicts = {k: c["verdict"] for k, c in by_key.items()}
    assert out["winner"] == "trial_3" and verdicts["trial_3"]["status"] == "best"
    assert verdicts["trial_3"]["text"] == "best (12 blocks = 3 seeds x 4 images)"
    worse = verdicts["trial_0"]
    assert (worse["status"], worse["versus"], worse["blocks"], worse["round"]) == ("worse", "trial_3", 8, 1)
    assert worse["p_value"] < race["level"] and worse["difference"] > 0.15
    assert worse["text"].startswith("worse than #3 (lpips +0.19") and worse["text"].endswith(
        f"p={worse['p_value']:.3g}, 8 blocks = 2 seeds x 4 images)")
    same = verdicts["trial_1"]
    assert (same["status"], same["versus"], same["blocks"]) == ("open", "trial_3", 12)
    assert same["text"].startswith("not distinguishable from #3 with this budget (lpips ")
    assert verdicts["trial_7"]["text"] == "failed at seed 1, left the race (training loss became nan at step 9)"
    # The race's order: survivors by mean (#3, #1), then the dropped #0, then the failed #7.
    assert [by_key[k]["long_rank"] for k in ("trial_3", "trial_1", "trial_0", "trial_7")] == [1, 2, 3, 4]
    # Short order by lpips of the ranked non-failed configs: 3, 1, 0 = the race's order.
    assert (out["rank_correlation"]["spearman"], out["rank_correlation"]["n"]) == (pytest.approx(1.0), 3)
    assert (out["winner"], out["short_run_winner"]) == ("trial_3", "trial_3")

    text = confirm.render_markdown(out)
    assert "RANDOM WEIGHTS" in text and worse["text"] in text and "the race saved 2" in text
    assert "training loss became nan" in text and "a block is one (seed, validation image) pair" in text
    lines = confirm.summary_lines(out)
    assert f"  #0 x: {worse['text']}" in lines and "winner: #3 x" in lines
    assert "10 of 12 runs trained; the race saved 2 (configs out of the race train no more seeds)" in lines


def test_a_training_without_per_image_scores_races_on_seeds_and_says_so():
    plan = confirm.ConfirmPlan(top_k=2, seeds=tuple(range(6)), steps=40, eval_every=20, alpha=0.05, first_test=5)
    candidates = [_candidate("trial_1", 1, None, {"lpips": 0.2}), _candidate("trial_0", 0, "pixel", {"lpips": 0.3})]
    rng = np.random.default_rng(5)
    per_seed = {"trial_1": [{"seed": s, "lpips": 0.2 + rng.normal(0, 0.01)} for s in range(6)],
                "trial_0": [{"seed": s, "lpips": 0.3 + rng.normal(0, 0.01)} for s in range(6)]}
    out = confirm.summarise("s", False, plan, [("lpips", MIN)], candidates, per_seed)
    assert (out["race"]["blocks"], out["race"]["images"], out["race"]["looks"]) == ("seed", 1, 2)
    assert "a block is one seed (this training reports mean scores only" in out["test_description"]
    verdict = {c["key"]: c["verdict"] for c in out["configs"]}["trial_0"]
    assert verdict["status"] == "worse" and verdict["text"].endswith("5 blocks = seeds)")
    assert out["winner"] == "trial_1"


# --- bad input: one line, exit 2, nothing written ------------------------------------------------------


def _nothing_written(root, name="s"):
    assert not (root / "studies" / name / "confirm").exists()
    url = f"sqlite:///{root}/studies/{name}/optuna.db"
    if (root / "studies" / name / "optuna.db").exists():
        assert f"{name}.confirm" not in optuna.study.get_all_study_names(url)


@pytest.mark.parametrize(("overrides", "message"), [
    (["confirm.top_k=0"], "confirm.top_k must be >= 1"),
    (["confirm.seeds=1"], "confirm.seeds must be >= 2 (a spread over seeds needs two)"),
    (["confirm.steps=0"], "confirm.steps must be >= 1"),
    (["confirm.steps=abc"], "confirm.steps must be a whole number >= 1, got 'abc'"),
    (["confirm.alpha=2"], "confirm.alpha must be a number between 0 and 1"),
    (["confirm.first_test=1"], "confirm.first_test must be >= 2 (a paired test needs two blocks), got 1"),
    (["task=style"], "was run with task layersearch.trial.tasks.SuperResolution"),
    (["search_space=sr_vgg19_pre_post"], "was run with search_space=sr_relu"),
    (["study.name=nope", "study.storage=sqlite:///{root}/studies/s/optuna.db"], "no study named 'nope'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, overrides, message):
    make_study(tmp_path, TRIALS)
    overrides = [o.format(root=tmp_path) for o in overrides]
    code = main(["confirm", "preset=smoke", f"paths.studies_dir={tmp_path}/studies", "study.name=s", *overrides])
    assert code == 2
    assert message in one_error_line(capsys)
    _nothing_written(tmp_path)


def test_a_missing_study_storage_a_study_without_complete_trials_and_a_broken_space(tmp_path, capsys):
    base = ["confirm", "preset=smoke", f"paths.studies_dir={tmp_path}/studies"]
    assert main([*base, "study.name=absent"]) == 2
    assert "no study storage" in one_error_line(capsys)
    make_study(tmp_path, [(None, layers("relu2_2"), "johnson_sr")], name="empty")
    assert main([*base, "study.name=empty"]) == 2
    assert "has no complete trial yet" in one_error_line(capsys)
    _nothing_written(tmp_path, "empty")
    broken = settings_to_dict(smoke().search_space) | {"content": {"candidates": ["relu9_9"], "min_layers": 0, "max_layers": 1}}
    make_study(tmp_path, TRIALS, name="moved", search_space_config=broken)
    assert main([*base, "study.name=moved"]) == 2
    assert "the search space of study 'moved' no longer composes" in one_error_line(capsys)
    _nothing_written(tmp_path, "moved")
    make_study(tmp_path, [((0.2, 20.0), {**layers("relu2_2"), "content_layers": {"relu9_9": 1.0}}, None)], name="old")
    assert main([*base, "study.name=old"]) == 2
    assert "the layer config of trial 0 no longer composes" in one_error_line(capsys)
    _nothing_written(tmp_path, "old")


def test_weights_unlike_the_sweeps_are_refused(tmp_path, capsys):
    make_study(tmp_path, [((0.2, 20.0), layers("relu2_2", weights="imagenet"), None)], random_weights=False)
    assert main(["confirm", "preset=smoke", f"paths.studies_dir={tmp_path}/studies", "study.name=s"]) == 2
    assert "was scored with pretrained weights" in one_error_line(capsys)
    _nothing_written(tmp_path)


def test_export_from_a_confirmation_that_has_not_run(tmp_path, capsys):
    make_study(tmp_path, TRIALS)
    base = ["export", "preset=smoke", f"paths.studies_dir={tmp_path}/studies", "study.name=s"]
    assert main([*base, "export.source=confirm"]) == 2
    assert "has no finished confirmation" in one_error_line(capsys)
    assert main([*base, "export.source=elsewhere"]) == 2
    assert "unknown export.source 'elsewhere'; choose one of: study, confirm" in one_error_line(capsys)
    assert not (tmp_path / "studies" / "s" / "best.yaml").exists()


# --- a real confirmation, in process (pixel losses: no loss network, seconds on a CPU) ------------------


PIXEL_TRIALS = [((0.30, 20.0), layers(pixel=1.0), "pixel"),
                ((0.20, 22.0), layers(pixel=1.0, criterion="l1"), None),
                ((0.25, 21.0), layers(pixel=0.5, criterion="l1"), None)]


def _complete_jobs(root, name="s"):
    jobs = optuna.load_study(study_name=f"{name}.confirm", storage=f"sqlite:///{root}/studies/{name}/optuna.db")
    done = jobs.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    return jobs, {(t.user_attrs["confirm_key"], t.user_attrs["seed"]): t for t in done}


@pytest.mark.slow
def test_confirm_runs_records_resumes_with_more_seeds_and_exports(tmp_path, capsys, monkeypatch):
    make_study(tmp_path, PIXEL_TRIALS)
    # first_test above any block count: no config leaves the race, so every seed runs (the resume counts runs).
    base = ["preset=smoke", f"paths.studies_dir={tmp_path}/studies", "study.name=s", "confirm.top_k=1",
            "confirm.first_test=1000", "confirm.steps=2"]
    assert main(["confirm", *base, "confirm.seeds=2"]) == 0
    out = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in out and "winner: #" in out

    jobs, done = _complete_jobs(tmp_path)
    assert sorted(done) == [("trial_0", 0), ("trial_0", 1), ("trial_1", 0), ("trial_1", 1)]
    assert len(jobs.trials) == 4  # no job twice, nothing else queued
    assert done["trial_1", 0].user_attrs["layer_config"] == PIXEL_TRIALS[1][1]
    summary = json.loads((tmp_path / "studies/s/confirm/confirm.json").read_text())
    assert summary["random_weights"] is True and summary["steps"] == 2 and summary["seeds"] == [0, 1]
    by_key = {c["key"]: c for c in summary["configs"]}
    assert set(by_key) == {"trial_1", "trial_0"} and by_key["trial_0"]["baseline"] == "pixel"
    assert by_key["trial_1"]["mean"]["lpips"] == pytest.approx(
        statistics.fmean(done["trial_1", s].values[0] for s in (0, 1)))
    assert by_key["trial_1"]["n_seeds"] == 2 and by_key["trial_1"]["per_seed"][0]["curve"][-1][0] == 2
    # The built-in training's per-image scores reach each seed's row; their mean is the run's score.
    row = by_key["trial_1"]["per_seed"][0]
    assert len(row["per_image"]["lpips"]) == len(row["images"]) == summary["race"]["images"] > 1
    assert statistics.fmean(row["per_image"]["lpips"]) == pytest.approx(row["lpips"])
    assert summary["race"]["looks"] == 0 and summary["race"]["runs_saved"] == 0
    statuses = sorted(c["verdict"]["status"] for c in summary["configs"])
    assert statuses == ["best", "open"] and summary["winner"] in by_key
    assert (tmp_path / "studies/s/confirm/confirm.md").read_text().startswith("# Confirmation of study s\n\n**RANDOM")

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/studies/mlflow.db")
    experiment = client.get_experiment_by_name("s")
    runs = client.search_runs([experiment.experiment_id], "tags.`layersearch.confirm` = 'true'")
    names = sorted(r.info.run_name for r in runs)
    assert names == ["confirm #0 seed 0", "confirm #0 seed 1", "confirm #1 seed 0", "confirm #1 seed 1", "confirm summary"]
    job_run = next(r for r in runs if r.info.run_name == "confirm #1 seed 1")
    assert job_run.data.metrics["lpips"] == pytest.approx(done["trial_1", 1].values[0])
    assert job_run.data.tags["layersearch.random_weights"] == "true" and "layersearch.trial" not in job_run.data.tags
    assert job_run.data.tags["layersearch.precision"] == precision_used(smoke("trainer.precision=auto").trainer,
                                                                             resolve_device("auto"))

    # A third seed, with MLflow failing: only the two new runs train, Optuna keeps them, one warning line.
    started = {key: t.datetime_start for key, t in done.items()}

    def broken(*args, **kwargs):
        raise RuntimeError("tracking store down")

    monkeypatch.setattr(StudyTracker, "log_metrics", broken)
    capsys.readouterr()
    assert main(["confirm", *base, "confirm.seeds=3"]) == 0
    warned = [line.split("warning: ", 1)[1] for line in capsys.readouterr().err.splitlines() if "warning: MLflow" in line]
    assert warned == ["MLflow: RuntimeError: tracking store down; confirm results are still recorded in "
                      "Optuna and confirm.json, not in MLflow"]
    jobs, done = _complete_jobs(tmp_path)
    assert len(done) == 6 and len(jobs.trials) == 6
    assert all(done[key].datetime_start == when for key, when in started.items())
    summary = json.loads((tmp_path / "studies/s/confirm/confirm.json").read_text())
    assert summary["seeds"] == [0, 1, 2] and all(c["n_seeds"] == 3 for c in summary["configs"])

    # Everything done: nothing trains, the results are rewritten the same.
    capsys.readouterr()
    assert main(["confirm", *base, "confirm.seeds=3"]) == 0
    assert "6 runs already done" in capsys.readouterr().out
    runs = client.search_runs([experiment.experiment_id], "tags.`layersearch.confirm_summary` = 'true'")
    assert len(runs) == 1  # each rewrite replaces the summary run
    assert len(optuna.load_study(study_name="s.confirm", storage=f"sqlite:///{tmp_path}/studies/s/optuna.db").trials) == 6

    # A different budget would average unlike runs: refused, naming how to start over.
    assert main(["confirm", *base[:-1], "confirm.steps=3"]) == 2
    assert "s.confirm was run with steps=2 (now 3)" in one_error_line(capsys)

    assert main(["export", *base, "export.source=confirm"]) == 0
    exported = yaml.safe_load((tmp_path / "studies/s/best.yaml").read_text())
    winner = next(c for c in summary["configs"] if c["key"] == summary["winner"])
    assert exported["provenance"]["source"] == "confirm" and exported["provenance"]["trial"] == winner["trial"]
    assert exported["provenance"]["confirm"]["mean"] == pytest.approx(winner["mean"])
    assert exported["provenance"]["random_weights"] is True
    assert {k: exported[k] for k in winner["layer_config"]} == winner["layer_config"]
    assert main(["export", *base, "export.source=confirm", "export.pareto=true"]) == 2
    assert "export.source=confirm writes one config" in one_error_line(capsys)


def test_the_queue_holds_only_the_seeds_the_race_still_needs(tmp_path):
    # The jobs study driven by hand: runs "finish" with per-image scores; a far worse config gets no more seeds.
    from layersearch.insight.confirm.run import advance

    url = f"sqlite:///{tmp_path}/jobs.db"
    jobs = optuna.create_study(study_name="s.confirm", storage=url, directions=[MIN])
    plan = confirm.ConfirmPlan(top_k=2, seeds=(0, 1, 2, 3), steps=4, eval_every=2, alpha=0.05, first_test=5)
    candidates = [_candidate("trial_1", 1, None, {"lpips": 0.2}), _candidate("trial_2", 2, None, {"lpips": 0.25}),
                  _candidate("trial_0", 0, "pixel", {"lpips": 0.3})]
    level = {"trial_1": 0.1, "trial_2": 0.1, "trial_0": 0.5}
    rng = np.random.default_rng(6)

    def finish_queued():
        for _ in jobs.get_trials(states=(optuna.trial.TrialState.WAITING,)):
            trial = jobs.ask()
            key = trial.user_attrs["confirm_key"]
            scores = (level[key] + np.linspace(0, 0.05, 3) + rng.normal(0, 0.002, 3)).tolist()
            trial.set_user_attr("per_image", {"lpips": scores})
            trial.set_user_attr("images", ["a", "b", "c"])
            jobs.tell(trial, [float(np.mean(scores))])

    def queued():
        return sorted((t.user_attrs["confirm_key"], t.user_attrs["seed"])
                      for t in jobs.get_trials(states=(optuna.trial.TrialState.WAITING,)))

    state = advance(jobs, url, plan, [("lpips", MIN)], candidates)
    assert not state.finished and queued() == sorted((c.key, s) for c in candidates for s in (0, 1))
    finish_queued()
    state = advance(jobs, url, plan, [("lpips", MIN)], candidates)
    # 2 seeds x 3 images = 6 blocks: the first look dropped the pixel baseline; seed 2 is for the other two.
    assert state.verdicts["trial_0"].status == "worse" and state.verdicts["trial_0"].blocks == 6
    assert queued() == [("trial_1", 2), ("trial_2", 2)]
    assert advance(jobs, url, plan, [("lpips", MIN)], candidates).rounds_done == 2 and len(queued()) == 2  # once
    finish_queued()
    advance(jobs, url, plan, [("lpips", MIN)], candidates)
    finish_queued()
    state = advance(jobs, url, plan, [("lpips", MIN)], candidates)
    assert state.finished and queued() == [] and len(jobs.trials) == 10  # 12 at most, 2 saved
