"""`layersearch report`: sections, a known answer, edge cases, bad input, a loadable HTML page, MLflow."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

import optuna
import pytest
from fake_study import fake_study
from helpers import one_error_line, smoke
from PIL import Image

from layersearch.cli import main
from layersearch.insight.effects import layer_effects
from layersearch.insight.importance import importances
from layersearch.insight.report import build_report
from layersearch.insight.study_summary import summarize_study
from layersearch.search.tracking import StudyTracker
from layersearch.settings import Settings

SECTIONS = ["The answer", "Pareto front", "Optimisation history", "Per-layer effect", "Importance", "Top trials",
            "Style task", "What each layer keeps"]


def make(tmp_path: Path, name: str = "s", n: int = 12, **kwargs) -> Settings:
    """A fake study on disk and the settings that read it."""
    (tmp_path / "studies" / name).mkdir(parents=True, exist_ok=True)
    fake_study(f"sqlite:///{tmp_path}/studies/{name}/optuna.db", name, n, **kwargs)
    return smoke(f"paths.studies_dir={tmp_path}/studies", f"study.name={name}",
                 f"tracking.uri=sqlite:///{tmp_path}/studies/mlflow.db")


class Sources(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag in ("link", "script"):
            self.links.append(attrs)


def check_html(folder: Path) -> list[str]:
    """Every image index.html references exists beside it and decodes; nothing is fetched from elsewhere."""
    parser = Sources()
    text = (folder / "index.html").read_text()
    parser.feed(text)
    assert not parser.links, "the page must not load scripts or stylesheets"
    assert "http://" not in text.replace("http://127.0.0.1", "") and "https://" not in text
    for src in parser.images:
        assert "/" not in src and (folder / src).is_file(), src
        with Image.open(folder / src) as image:
            image.load()
            assert image.size[0] > 50 and image.size[1] > 50
    return parser.images


def test_report_has_every_section_in_order(tmp_path, capsys):
    cfg = make(tmp_path, n=12, n_pruned=2, n_failed=1)
    assert main(["report", *[f"{k}={v}" for k, v in {
        "preset": "smoke", "paths.studies_dir": cfg.paths.studies_dir, "study.name": "s",
        "tracking.uri": cfg.tracking.uri}.items()]]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "studies" / "s" / "report"
    assert f"wrote {folder}/index.html" in out and "RANDOM WEIGHTS" in out
    md = (folder / "report.md").read_text()
    positions = [md.index(f"## {s}") for s in SECTIONS]
    assert positions == sorted(positions)
    assert md.startswith("**RANDOM WEIGHTS")
    assert "12 complete, 2 pruned, 1 failed" in md
    assert "### At step 1, 14 trials (complete and pruned)" in md  # two objectives: the `intermediate` attr
    assert "johnson_sr" in md and "pixel" in md  # differences from the baselines
    assert "unconfirmed" in md and "layersearch confirm study.name=s" in md
    images = check_html(folder)
    assert set(images) >= {"pareto.png", "history.png", "layers.png", "importance.png"}
    header = (folder / "layers.csv").read_text().splitlines()[0].split(",")
    assert header[:13] == ["group", "layer", "n_with", "n_without", "median_with", "median_without", "difference",
                           "ci90_low", "ci90_high", "better_if", "top_decile_uses", "top_decile_size",
                           "top_decile_median_weight"]
    assert {"verdict", "arch"} <= set(header)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "staging folders left behind"


def test_known_answer_layer_ranks_first_and_is_called_helpful():
    """relu3_3's presence lowers lpips by 0.05; noise 0.01 elsewhere; every other layer is irrelevant."""
    study = fake_study(None, "known", 40, metrics=("lpips",), effect_layer="relu3_3", effect=-0.05, seed=3)
    summary = summarize_study(study)
    table = layer_effects(summary)
    first = table.rows[0]
    assert first.layer == "relu3_3" and first.arch == "vgg16"
    assert first.ci_low < -0.05 < first.ci_high < 0  # the interval holds the truth and excludes 0
    assert first.verdict == "helps" and first.p_adjusted < 0.10
    assert abs(first.difference + 0.05) < 0.01
    assert layer_effects(summary).rows == table.rows  # the same study gives the same report
    scores = importances(summary)
    assert next(iter(scores["lpips"])) == "use_relu3_3", scores
    assert [r.verdict for r in table.rows[1:]] == ["unclear"] * 4  # the irrelevant layers are not called


def test_no_effect_gives_no_verdict():
    study = fake_study(None, "null", 40, metrics=("lpips",), effect=0.0, seed=1)
    table = layer_effects(summarize_study(study))
    assert {r.verdict for r in table.rows} == {"unclear"}
    assert table.tested == 5 and all(r.ci_low is not None for r in table.rows)


@pytest.mark.parametrize("n, metrics", [(1, ("lpips", "psnr_y")), (3, ("lpips",)), (1, ("lpips",))])
def test_tiny_and_single_objective_studies_say_what_they_cannot_show(tmp_path, n, metrics):
    cfg = make(tmp_path, n=n, metrics=metrics, baselines=False)
    result = build_report(cfg)
    md = (result.out_dir / "report.md").read_text()
    for section in SECTIONS:
        assert f"## {section}" in md
    assert "importance needs at least" in md
    if len(metrics) == 1:
        assert "single objective: there is no Pareto front" in md and "best config" in md
    else:
        assert "one complete trial" in md
    check_html(result.out_dir)


def test_unknown_study_and_no_complete_trial_are_one_line_and_write_nothing(tmp_path, capsys):
    base = ["preset=smoke", f"paths.studies_dir={tmp_path}/studies", f"tracking.uri=sqlite:///{tmp_path}/m.db"]
    assert main(["report", *base, "study.name=nope"]) == 2
    assert "no study storage" in one_error_line(capsys)
    (tmp_path / "studies" / "empty").mkdir(parents=True)
    fake_study(f"sqlite:///{tmp_path}/studies/empty/optuna.db", "empty", 0, n_pruned=2, baselines=False)
    assert main(["report", *base, "study.name=empty"]) == 2
    assert "no complete trial" in one_error_line(capsys)
    assert sorted(p.name for p in (tmp_path / "studies").rglob("*")) == ["empty", "optuna.db"]


def test_report_links_trial_runs_and_logs_to_the_summary_run(tmp_path):
    import mlflow

    cfg = make(tmp_path, n=10)
    uri = cfg.tracking.uri
    tracker = StudyTracker(uri, "s", "sqlite:///x.db", tags={"layersearch.lpips": "alex/random"})
    run_ids = {}
    for number in (0, 1, 2):  # trials 0-2 have runs, the others do not: they get no link
        run_ids[number] = tracker.start_trial(number, {}, {})
        tracker.end_trial("COMPLETE", {"lpips": 0.3})
    summary_run = tracker.log_summary([], [], "sqlite:///x.db")
    result = build_report(cfg)
    assert result.mlflow_run == summary_run
    md = (result.out_dir / "report.md").read_text()
    assert f"/runs/{run_ids[0]}?workflowType=machine_learning" in md and "no run" in md
    assert "alex/random" in md
    artifacts = mlflow.MlflowClient(uri).list_artifacts(summary_run, "report")
    assert "report/index.html" in {a.path for a in artifacts}


def test_mlflow_failure_keeps_the_files(tmp_path, monkeypatch, recwarn):
    import mlflow

    cfg = make(tmp_path, n=10)
    StudyTracker(cfg.tracking.uri, "s", "sqlite:///x.db").log_summary([], [], "sqlite:///x.db")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(mlflow.MlflowClient, "log_artifacts", broken)
    result = build_report(cfg)
    assert result.mlflow_run is None and (result.out_dir / "index.html").exists()
    assert any("not logged to MLflow" in str(w.message) for w in recwarn)


def test_confirm_results_replace_the_unconfirmed_note(tmp_path):
    cfg = make(tmp_path, n=10)
    confirm = {"study": "s", "random_weights": True, "steps": 1000, "seeds": [0, 1, 2], "primary": "lpips",
               "objectives": [["lpips", "minimize"], ["psnr_y", "maximize"]],
               "configs": [{"key": "trial_5", "trial": 5, "baseline": None, "label": "#5 relu2_2",
                            "layer_config": {}, "short_run": {"lpips": 0.25}, "mean": {"lpips": 0.21, "psnr_y": 26.1},
                            "std": {"lpips": 0.004, "psnr_y": 0.1}, "n_seeds": 3, "long_rank": 1},
                           {"key": "johnson_sr", "trial": 0, "baseline": "johnson_sr", "label": "#0 johnson_sr",
                            "layer_config": {}, "short_run": {"lpips": 0.26}, "mean": {"lpips": 0.24, "psnr_y": 25.9},
                            "std": {"lpips": 0.005, "psnr_y": 0.1}, "n_seeds": 3, "long_rank": 2}],
               "rank_correlation": {"spearman": 1.0, "kendall": 1.0, "n": 2}, "winner": "trial_5",
               "comparisons": [{"winner": "trial_5", "baseline": "johnson_sr", "metric": "lpips", "difference": -0.03,
                                "better_if": "lower", "ci_low": -0.036, "ci_high": -0.024, "p_value": 0.001,
                                "test": "welch_t", "verdict": "better beyond seed noise"}]}
    path = tmp_path / "studies" / "s" / "confirm" / "confirm.json"
    path.parent.mkdir()
    path.write_text(json.dumps(confirm))
    md = (build_report(cfg).out_dir / "report.md").read_text()
    assert "unconfirmed" not in md
    assert "0.2100 ± 0.004" in md and "26.10 ± 0.1" in md and "better beyond seed noise" in md and "Spearman 1" in md
    # The comparison's interval is confirm's (1 - alpha, 95% by default), and configs appear by label.
    assert "95% interval" in md and "Winner at the longer budget: #5 relu2_2." in md
    assert "| #5 relu2_2 | johnson_sr | lpips |" in md


def test_forty_trial_report_renders_quickly(tmp_path):
    cfg = make(tmp_path, n=36, n_pruned=3, n_failed=1)
    started = time.perf_counter()
    build_report(cfg)
    seconds = time.perf_counter() - started
    print(f"40-trial report: {seconds:.1f} s")
    assert seconds < 20


@pytest.mark.slow
def test_report_opens_in_headless_chromium_with_every_image(tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    folder = build_report(make(tmp_path, n=12)).out_dir
    # The page counts its own loaded images; --dump-dom prints the DOM after load, onload handlers included.
    probe = folder / "probe.html"
    probe.write_text((folder / "index.html").read_text().replace(
        "</body>", "<script>window.onload=()=>{const i=[...document.images];document.body.setAttribute("
        "'data-loaded', i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length)}</script></body>"))
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--no-first-run", f"--user-data-dir={profile}",
             "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
            capture_output=True, text=True, timeout=120).stdout
    n = len(check_html(folder))
    assert f'data-loaded="{n}/{n}"' in dom, dom[:500]


def test_fake_study_records_what_the_sweep_records():
    """Guard for fake_study: the attributes the report reads are the ones study.py and runner.py write."""
    study = fake_study(None, "attrs", 3)
    assert set(study.user_attrs) >= {"objectives", "search_space", "task", "search_space_config", "random_weights"}
    assert all("layer_config" in t.user_attrs for t in study.trials)
    assert isinstance(study, optuna.Study)


def test_style_study_plots_the_ratio_and_the_style_front(tmp_path):
    import numpy as np

    (tmp_path / "studies" / "st").mkdir(parents=True)
    study = optuna.create_study(study_name="st", storage=f"sqlite:///{tmp_path}/studies/st/optuna.db",
                                directions=["minimize", "minimize"])
    study.set_user_attr("objectives", ["content_lpips", "style_distance"])
    study.set_user_attr("task", "layersearch.trial.tasks.StyleTransfer")
    study.set_user_attr("search_space", "style_johnson")
    study.set_user_attr("search_space_config", {"arch": "vgg16", "content": {"candidates": ["relu2_2", "relu3_3"]},
                                                "style": {"candidates": ["relu1_2", "relu2_2", "relu3_3"]}})
    rng = np.random.default_rng(0)
    for i in range(10):
        ratio = float(10 ** rng.uniform(-6, -2))
        lc = {"loss_net": {"arch": "vgg16", "weights": "imagenet"}, "content_layers": {"relu2_2": 1.0},
              "style_layers": {"relu1_2": 1.0, **({"relu3_3": 2.0} if i % 2 else {})}, "content_weight": 1.0,
              "style_weight": 1 / ratio, "pixel_weight": 0.0, "tv_weight": 0.0, "criterion": "mse"}
        study.add_trial(optuna.trial.create_trial(values=[0.3 + 0.01 * np.log10(ratio), 1e-3 - 1e-4 * np.log10(ratio)],
                                                  user_attrs={"layer_config": lc}))
    cfg = smoke(f"paths.studies_dir={tmp_path}/studies", "study.name=st", f"tracking.uri=sqlite:///{tmp_path}/m.db")
    folder = build_report(cfg).out_dir
    images = check_html(folder)
    assert {"style_ratio.png", "style_pareto.png"} <= set(images)
    md = (folder / "report.md").read_text()
    assert "relu3_3 (style)" in md and "log10_content_style_ratio" in md and "RANDOM" not in md


@pytest.mark.slow
def test_report_of_a_real_sweep_through_the_console_script(tmp_path):
    """What `make demo` does, at smoke size: sweep, then report; every section, links to the real runs."""
    from helpers import run_cli

    args = ["preset=smoke", "study.name=demo", "study.n_trials=3", "study.pruner=none"]
    sweep = run_cli(["sweep", *args], tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    report = run_cli(["report", *args], tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "wrote studies/demo/report/index.html" in report.stdout and "logged to MLflow run" in report.stdout
    folder = tmp_path / "studies" / "demo" / "report"
    md = (folder / "report.md").read_text()
    assert all(f"## {s}" in md for s in SECTIONS) and "johnson_sr" in md
    assert md.count("/runs/") == 3  # each complete trial links to its own MLflow run
    check_html(folder)
