"""The report's evidence rules: seed noise from baseline repeats, pruned trials at an early step, several
loss networks (per-network effects, costs, LPIPS grading its own backbone, Gram terms on ResNets)."""

from __future__ import annotations

import csv
from pathlib import Path

import optuna
import pytest
from fake_study import DEMO_LIKE, fake_study
from helpers import one_error_line, smoke

from layersearch.cli import main
from layersearch.insight.best_trials import pareto_front, top_trials
from layersearch.insight.effects import step_effects
from layersearch.insight.importance import importances
from layersearch.insight.report import build_report
from layersearch.insight.study_summary import summarize_study
from layersearch.search.results import NO_ESTIMATE
from layersearch.settings import Settings

NETWORKS = {"vgg16": ["relu2_2", "relu3_3", "relu4_3"], "resnet18": ["layer1", "layer2", "layer3"]}


def make(tmp_path: Path, n: int, **kwargs) -> Settings:
    (tmp_path / "studies" / "s").mkdir(parents=True, exist_ok=True)
    fake_study(f"sqlite:///{tmp_path}/studies/s/optuna.db", "s", n, **kwargs)
    return smoke(f"paths.studies_dir={tmp_path}/studies", "study.name=s",
                 f"tracking.uri=sqlite:///{tmp_path}/studies/mlflow.db")


def rows(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_baseline_repeats_measure_noise_and_are_not_extra_configs(tmp_path):
    cfg = make(tmp_path, 20, repeats=True, seed_noise=0.002)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/studies/s/optuna.db")
    summary = summarize_study(study)
    assert len(study.trials) == 22 and summary.counts["complete"] == 20 and summary.counts["repeats"] == 2
    shown = {t.number for t in [*summary.complete, *pareto_front(summary), *top_trials(summary, 30)]}
    assert not shown & {20, 21}  # the repeats are trials 20 and 21
    assert summary.noise["lpips"].df == 2 and summary.noise["lpips"].sd is not None
    folder = build_report(cfg).out_dir
    md = (folder / "report.md").read_text()
    assert "20 complete, 0 pruned, 0 failed (+ 2 baseline repeats with another seed)" in md
    assert "lpips: seed SD" in md and "(df 2: 4 runs of 2 configs)" in md
    assert "(mean of 2 seeds)" in md
    table = md[md.index("| trial | baseline | metric |"):].split("\n\n")[0]
    verdicts = [line.rsplit("|", 2)[-2].strip() for line in table.splitlines()[2:]]
    assert verdicts and set(verdicts) <= {"better", "worse", "within noise"}
    assert all(int(r["n_with"]) + int(r["n_without"]) == 20 for r in rows(folder / "layers.csv"))


def test_without_repeats_no_difference_is_called(tmp_path):
    md = (build_report(make(tmp_path, 12)).out_dir / "report.md").read_text()
    table = md[md.index("| trial | baseline | metric |"):].split("\n\n")[0]
    assert table.count(NO_ESTIMATE) == table.count("\n") - 1  # every row
    assert "| better |" not in table and "| worse |" not in table


def test_pruned_trials_give_the_effect_at_an_early_step(tmp_path):
    cfg = make(tmp_path, 20, n_pruned=10, metrics=("lpips",))
    folder = build_report(cfg).out_dir
    md = (folder / "report.md").read_text()
    assert "### At step 1, 30 trials (complete and pruned)" in md
    assert "10 pruned trials are missing from this table" in md
    at_step = rows(folder / "layers_at_step.csv")
    assert {r["step"] for r in at_step} == {"1"} and {r["n_trials"] for r in at_step} == {"30"}
    summary = summarize_study(optuna.load_study(study_name="s", storage=cfg.study.storage
                                                or f"sqlite:///{tmp_path}/studies/s/optuna.db"))
    # Pruned trials stop after step 1 or 2 (half each), complete ones report steps 1-3.
    assert (step_effects(summary, 0.8).step, step_effects(summary, 0.8).n_trials) == (2, 25)
    assert (step_effects(summary, 0.5).step, step_effects(summary, 0.5).n_trials) == (3, 20)
    unpruned = summarize_study(fake_study(None, "u", 12, metrics=("lpips",)))
    assert step_effects(unpruned) == "no trial was pruned, so the table above already uses every trial"


def test_bad_step_share_is_one_line(tmp_path, capsys):
    cfg = make(tmp_path, 8)
    args = ["preset=smoke", f"paths.studies_dir={cfg.paths.studies_dir}", "study.name=s",
            f"tracking.uri={cfg.tracking.uri}"]
    assert main(["report", *args, "report.step_share=1.5"]) == 2
    assert "report.step_share must be a number in (0, 1]" in one_error_line(capsys)
    assert not (tmp_path / "studies" / "s" / "report").exists()


def test_small_study_gives_no_verdict_and_says_why(tmp_path):
    md = (build_report(make(tmp_path, 7, metrics=("lpips",))).out_dir / "report.md").read_text()
    assert "trials with it (5 needed on each side) |" in md or "trials without it (5 needed on each side) |" in md
    assert "not enough evidence to call any layer helpful or harmful" in md
    assert "| helps |" not in md and "| hurts |" not in md


def test_every_row_without_an_interval_says_why_and_no_test_is_not_0_tested(tmp_path):
    """The offline demo's report said "Holm-adjusted over the 0 layers tested here" over a bare n/a interval
    for a layer with 5 trials a side (10 trials, 6 terms, df 4)."""
    folder = build_report(make(tmp_path, 10, metrics=("lpips",), baselines=False, configs=DEMO_LIKE)).out_dir
    md = (folder / "report.md").read_text()
    section = md[md.index("## Per-layer effect"):md.index("## Importance")]
    assert "0 layers tested" not in section
    assert ("Holm-adjusted over the layers tested (no layer could be tested: 4 had fewer than 5 trials with it or "
            "without it; 1 had an estimate depending on trials the model fits exactly, whose noise it cannot "
            "measure)") in section
    assert ("| relu5_3 | 5 / 5 |" in section and "| n/a: the estimate depends on trial #5, whose mix of layers and "
            "settings no other trials reproduce, so the model fits it exactly and cannot measure its noise |") in section
    assert "| n/a: only 1 trial with it (5 needed on each side) |" in section
    intervals = [line.split(" | ")[4] for line in section.splitlines() if line.startswith("| relu")]
    assert len(intervals) == 5 and all(cell.startswith("n/a: ") for cell in intervals)  # never a bare n/a
    assert "5 could not be tested (" in section and "not enough evidence either way" not in section
    assert "ci90_low" in (folder / "layers.csv").read_text()


def test_several_networks_each_layer_per_network_costs_and_a_self_graded_warning(tmp_path):
    cfg = make(tmp_path, 40, archs=NETWORKS, arch_effect={"resnet18": 0.03}, seconds={"vgg16": 40, "resnet18": 12},
               lpips="vgg/imagenet", baselines=False)
    folder = build_report(cfg).out_dir
    md = (folder / "report.md").read_text()
    layers = rows(folder / "layers.csv")
    assert {(r["arch"], r["layer"]) for r in layers} == {(a, n) for a, names in NETWORKS.items() for n in names}
    assert "### Per-network effect" in md and "| resnet18 |" in md
    assert "resnet18 is worse than the others" in md  # +0.03 lpips with noise 0.01 over 40 trials
    assert "vgg16: 40 s (" in md and "resnet18: 12 s (" in md
    assert "the loss network vgg16 is also the backbone of the LPIPS metric (vgg/imagenet)" in md
    summary = summarize_study(optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/studies/s/optuna.db"))
    assert "arch" in importances(summary)["lpips"]


def test_lpips_on_another_backbone_gives_no_warning(tmp_path):
    md = (build_report(make(tmp_path, 8, lpips="alex/imagenet")).out_dir / "report.md").read_text()
    assert "alex/imagenet" in md and "backbone of the LPIPS metric" not in md


def test_gram_terms_on_a_resnet_are_marked(tmp_path):
    (tmp_path / "studies" / "g").mkdir(parents=True)
    study = optuna.create_study(study_name="g", storage=f"sqlite:///{tmp_path}/studies/g/optuna.db")
    study.set_user_attr("objectives", ["style_distance"])
    study.set_user_attr("task", "layersearch.trial.tasks.StyleTransfer")
    study.set_user_attr("search_space_config", {"arch": "resnet18", "content": {"candidates": ["layer3"]},
                                                "style": {"candidates": ["layer1", "layer2"]}})
    for i in range(12):
        lc = {"loss_net": {"arch": "resnet18", "weights": "imagenet"}, "content_layers": {"layer3": 1.0},
              "style_layers": {"layer1": 1.0, **({"layer2": 1.0} if i % 2 else {})}, "content_weight": 1.0,
              "style_weight": 1e3, "pixel_weight": 0.0, "tv_weight": 0.0, "criterion": "mse"}
        study.add_trial(optuna.trial.create_trial(value=0.1 + 0.01 * i, user_attrs={"layer_config": lc}))
    cfg = smoke(f"paths.studies_dir={tmp_path}/studies", "study.name=g", f"tracking.uri=sqlite:///{tmp_path}/m.db")
    md = (build_report(cfg).out_dir / "report.md").read_text()
    assert "layer2 (style) †" in md and "Wang, Li & Vasconcelos, CVPR 2021" in md
    assert "style layer1:1 + layer2:1, ratio 0.001 †" in md  # configs in the answer and top tables too


@pytest.mark.parametrize("share", [0.0, -1, "x"])
def test_step_share_outside_0_1_is_refused(tmp_path, share):
    from layersearch.errors import ConfigValueError
    from layersearch.insight.report import step_share

    with pytest.raises(ConfigValueError, match="report.step_share"):
        step_share(share)
