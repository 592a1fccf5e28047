"""`layersearch export`: the best trial (or the Pareto front) of a study -> layer config files, atomically."""

from __future__ import annotations

import csv
import io
import json
import platform
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from ...lossnet.loss import LossConfig
from ...lossnet.registry import loss_network
from ...lossnet.weights import any_random
from ...outputs import RANDOM_BANNER, atomic_write_text
from ...settings import Settings
from ..storage import StudyError, load_study, redact
from .ranking import first_runs, front

FORMATS = ("yaml", "json", "basicsr")
SOURCES = ("study", "confirm")  # export.source: confirm is chosen by layersearch.insight.confirm.export_confirmed


class ExportError(StudyError):
    """A config that the chosen export format cannot express; the message says why."""


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("layersearch", "torch", "torchvision", "optuna", "mlflow", "lpips"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def made_with_random_weights(study: optuna.Study, trial: FrozenTrial) -> bool:
    """A trial's loss network, or the study's scoring (the ``random_weights`` study attribute), was random."""
    loss_weights = trial.user_attrs["layer_config"]["loss_net"]["weights"]
    return any_random(loss_weights) or bool(study.user_attrs.get("random_weights"))


def provenance_config(study: optuna.Study, trial: FrozenTrial, objectives: list[str], url: str) -> dict[str, Any]:
    """The trial's layer config with a ``provenance`` block (ignored by ``PerceptualLoss.from_config``)."""
    config = dict(trial.user_attrs["layer_config"])
    random_weights = made_with_random_weights(study, trial)
    config["provenance"] = {
        "study": study.study_name,
        "storage": redact(url),
        "trial": trial.number,
        "baseline": trial.user_attrs.get("baseline"),
        "metrics": dict(zip(objectives, trial.values, strict=True)),
        "params": dict(trial.params),
        "random_weights": random_weights,
        "versions": _versions(),
    }
    return config


def basicsr_block(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``perceptual_opt`` (and ``pixel_opt``) blocks of a BasicSR options file for this config.

    BasicSR's PerceptualLoss has one ``layer_weights`` dict and averages the Gram difference (MSE) where
    ours sums it, so only content-only configs without TV translate exactly; anything else is an ExportError.
    Its VGGFeatureExtractor builds torchvision's VGGs (with or without batch norm) and no other network.
    """
    cfg = LossConfig.from_mapping(config)
    if not loss_network(cfg.arch).basicsr_names:
        raise ExportError(f"export.format=basicsr: BasicSR's PerceptualLoss takes VGG only (vgg11..vgg19, with or "
                          f"without _bn), and this config's loss network is {cfg.arch}; export it as yaml and load "
                          "it with layersearch's PerceptualLoss.from_config")
    if cfg.style_layers and cfg.style_weight > 0:
        raise ExportError("export.format=basicsr: this config has style (Gram) terms; BasicSR's style term averages "
                         "the Gram difference where layersearch sums it, so it would mean something else")
    if cfg.tv_weight > 0:
        raise ExportError("export.format=basicsr: BasicSR's PerceptualLoss has no TV term (tv_weight > 0)")
    if not cfg.content_layers:
        raise ExportError("export.format=basicsr: the config has no content layers, so no perceptual_opt block")
    block: dict[str, Any] = {
        "perceptual_opt": {
            "type": "PerceptualLoss",
            "layer_weights": dict(cfg.content_layers),  # BasicSR's names are ours (bn1_1 too): conv5_4 is before the ReLU
            "vgg_type": cfg.arch,
            "use_input_norm": True,  # images in [0, 1], ImageNet normalisation inside, as here
            "range_norm": False,
            "perceptual_weight": cfg.content_weight,
            "style_weight": 0.0,
            "criterion": {"mse": "l2", "l1": "l1"}[cfg.criterion],
        }
    }
    if cfg.pixel_weight > 0:
        block["pixel_opt"] = {"type": {"mse": "MSELoss", "l1": "L1Loss"}[cfg.criterion],
                              "loss_weight": cfg.pixel_weight, "reduction": "mean"}
    return block


def _render(config: dict[str, Any], fmt: str) -> str:
    random_weights = config.get("provenance", {}).get("random_weights")
    if fmt == "json":
        return json.dumps(config, indent=2) + "\n"
    head = f"# {RANDOM_BANNER}\n" if random_weights else ""
    if fmt == "basicsr":
        prov = config.get("provenance", {})
        head += f"# layersearch export: study {prov.get('study')}, trial {prov.get('trial')}, {prov.get('metrics')}\n"
        return head + yaml.safe_dump(basicsr_block({k: v for k, v in config.items() if k != "provenance"}),
                                     sort_keys=False)
    return head + "# layersearch layer config: PerceptualLoss.from_config(path) loads it\n" + yaml.safe_dump(
        config, sort_keys=False)


def export_study(settings: Settings, chosen: dict[str, Any] | None = None) -> list[Path]:
    """Write the best trial's layer config (or the Pareto front) of ``study.name``; return the files written.

    Args:
        chosen: a layer config with provenance picked elsewhere (``export.source=confirm``: the winner of
            `layersearch confirm`), written instead of the study's best trial.
    """
    export = settings.export
    fmt = export.format
    if fmt not in FORMATS:
        raise StudyError(f"unknown export.format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    source = export.source
    if source not in SOURCES:
        raise StudyError(f"unknown export.source {source!r}; choose one of: {', '.join(SOURCES)}")
    if (source == "confirm") != (chosen is not None):
        raise ValueError("export.source=confirm goes through layersearch.insight.confirm.export_confirmed")
    if chosen is not None and export.pareto:
        raise ExportError("export.pareto=true writes the study's Pareto front; export.source=confirm writes one "
                          "config, the confirmation's winner")
    studies_dir = settings.paths.studies_dir
    study, url = load_study(settings.study, studies_dir)
    objectives = list(study.user_attrs.get("objectives") or [f"objective_{i}" for i in range(len(study.directions))])
    complete = [t for t in first_runs(study) if t.state == TrialState.COMPLETE and "layer_config" in t.user_attrs]
    if not complete:
        raise StudyError(f"study {study.study_name!r} has no complete trial yet; run more trials first")
    metric = export.metric or objectives[0]
    if metric not in objectives:
        raise StudyError(f"export.metric={metric!r} is not an objective of study {study.study_name!r}: "
                         f"choose from {', '.join(objectives)}")
    index = objectives.index(metric)
    minimise = study.directions[index] == optuna.study.StudyDirection.MINIMIZE
    suffix = {"yaml": "yaml", "json": "json", "basicsr": "basicsr.yml"}[fmt]
    root = Path(studies_dir) / study.study_name

    if export.pareto:
        directions = ["minimize" if d == optuna.study.StudyDirection.MINIMIZE else "maximize" for d in study.directions]
        best = sorted(front(complete, directions), key=lambda t: t.values[index], reverse=not minimise)
        out_dir = Path(export.out or root / "pareto")
        rendered = {out_dir / f"trial_{t.number}.{suffix}": _render(provenance_config(study, t, objectives, url), fmt)
                    for t in best}
        table = io.StringIO()
        writer = csv.writer(table)
        writer.writerow(["trial", "baseline", *objectives, "random_weights", "file"])
        for t, path in zip(best, rendered, strict=True):
            writer.writerow([t.number, t.user_attrs.get("baseline") or "", *t.values,
                             made_with_random_weights(study, t), path.name])
        rendered[out_dir / "pareto.csv"] = table.getvalue()
    else:
        best = sorted(complete, key=lambda t: t.values[index], reverse=not minimise)[0]
        out = Path(export.out or root / f"best.{suffix}")
        rendered = {out: _render(chosen or provenance_config(study, best, objectives, url), fmt)}
    # Everything is rendered (and a basicsr misfit raised) before the first file is written.
    return [atomic_write_text(path, text) for path, text in rendered.items()]
