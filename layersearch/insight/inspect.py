"""`layersearch inspect`: what each loss-network layer keeps of an image, by inverting it from noise.

After Mahendran & Vedaldi 2015 and Johnson et al. 2016 (Fig. 3): for each chosen layer, optimise an image,
started from noise, so that its features at that layer match the target's (feature reconstruction), and so
that its Gram matrices at every chosen layer up to that one match (style reconstruction), each with a small
total-variation prior. Shallow layers give the image back almost exactly; deep layers keep layout and lose
pixels, and style reconstructions keep textures and lose layout.

Optimiser: L-BFGS with a strong-Wolfe line search. These are smooth, deterministic, full-batch problems on
one image, where L-BFGS converges in far fewer iterations than Adam and needs no learning rate, which
differs by orders of magnitude between a relu1_2 match and a Gram match (Gatys et al. and Johnson's
neural-style use it for the same reason). Losses are normalised by the target's energy
(``|F(x) - F(t)|^2 / |F(t)|^2``, as in Mahendran & Vedaldi) so one TV weight suits every layer.
"""

from __future__ import annotations

import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigValueError, LayersearchError, OutputExistsError
from ..lossnet.features import FeatureExtractor
from ..lossnet.layers import layer_info, layer_names, receptive_field, validate_layers
from ..lossnet.loss import gram_matrix, total_variation
from ..lossnet.weights import any_random, weights_for, weights_label
from ..outputs import RANDOM_BANNER, atomic_write_json, save_grid, timestamped_dir
from ..progress import progress
from ..search.storage import StudyError, load_study
from ..settings import InspectSettings, Settings
from ..trial.metric_registry import RESTORATION, check_image_side, lpips_graded, metric_set
from ..trial.score import mean_scores
from ..trial.tasks import load_style_image
from ..trial.transforms import center_crop
from .places import inspect_dir, replace_dir, staging_dir
from .records import log_folder

__all__ = ["InspectError", "InspectResult", "inspect_layers", "invert", "study_candidates"]


class InspectError(LayersearchError, ValueError):
    """Settings `layersearch inspect` cannot use (an image size below a layer's stride, no layers)."""


@dataclass
class InspectResult:
    out_dir: Path
    layers: list[dict[str, Any]]
    random_weights: bool
    seconds: float
    notes: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)  # the scores of each reconstruction, in order


def study_candidates(space_config: Mapping[str, Any], arch: str) -> list[str]:
    """Content and style candidates of a search space, in network order, without repeats."""
    names: list[str] = []
    for group in ("content", "style"):
        spec = space_config.get(group) or {}
        raw = spec.get("candidates") or []
        if isinstance(raw, Mapping):
            raw = raw.get(arch) or [n for v in raw.values() for n in v]
        names += [str(n) for n in raw]
    order = {n: i for i, n in enumerate(layer_names(arch))}
    return sorted(dict.fromkeys(names), key=lambda n: order.get(n, 10_000))


def _choose_layers(settings: Settings) -> tuple[str, list[str], str | None, list[str]]:
    """(arch, layers, the study's name when one was found, notes) from ``inspect.layers``, the study or the space."""
    notes: list[str] = []
    study_name = None
    space = settings.search_space
    try:
        study, _ = load_study(settings.study, settings.paths.studies_dir)
        space = study.user_attrs.get("search_space_config") or space
        study_name = study.study_name
    except StudyError:
        notes.append(f"no study named {settings.study.name!r}: layers from search_space={space.get('name')}")
    loss_arch = settings.loss_net.arch
    archs = space.get("arch") or loss_arch
    archs = [archs] if isinstance(archs, str) else [str(a) for a in archs]
    chosen = list(settings.inspect.layers or [])
    if chosen:
        # Named layers: loss_net's network when they are its layers (loss_net=resnet50 inspect.layers=[layer1]),
        # else the space's network that has them; neither: loss_net's, whose error lists its valid names.
        fits = [a for a in dict.fromkeys([loss_arch, *archs]) if set(chosen) <= set(layer_names(a))]
        arch = fits[0] if fits else loss_arch
        if arch != loss_arch:
            notes.append(f"{', '.join(chosen)}: not layers of loss_net {loss_arch}; inspecting {arch}, which "
                         f"search_space={space.get('name')} searches")
    else:
        arch = loss_arch if loss_arch in archs else archs[0]
        if arch != loss_arch:
            notes.append(f"loss_net {loss_arch} is not searched by search_space={space.get('name')}: inspecting "
                         f"{arch}'s candidates (name {loss_arch}'s layers with inspect.layers=[...])")
    layers = validate_layers(arch, chosen) if chosen else study_candidates(space, arch)
    if not layers:
        raise InspectError("no layers to inspect: set inspect.layers=[relu1_2,relu2_2,...]")
    order = {n: i for i, n in enumerate(layer_names(arch))}
    return arch, sorted(dict.fromkeys(layers), key=order.__getitem__), study_name, notes


def _number(section: InspectSettings, key: str, low: float) -> Any:
    value = getattr(section, key)  # its type is checked when the settings are parsed
    if value < low:
        raise ConfigValueError(f"inspect.{key} must be >= {low}, got {value}")
    return value


def load_target(spec: str, size: int) -> torch.Tensor:
    """``sample:<name>`` or a path, resized (shorter side) and centre-cropped to ``1 x 3 x size x size`` in [0, 1]."""
    return center_crop(load_style_image(str(spec), size), size)[None].contiguous()


def invert(extractor: FeatureExtractor, target: torch.Tensor, layers: Sequence[str], kind: str, steps: int,
           tv_weight: float, seed: int, desc: str = "") -> tuple[torch.Tensor, float]:
    """Optimise an image from noise until its ``kind`` statistics at ``layers`` match ``target``'s.

    Args:
        extractor: produces every name in ``layers``.
        target: ``1 x 3 x H x W`` RGB in [0, 1].
        layers: one layer for ``kind='feature'``; the cumulative set for ``kind='style'`` (Gram matrices).
        steps: forward/backward passes L-BFGS may spend (its line search uses several per iteration).
        tv_weight: weight of the total-variation prior.
        seed: seeds the starting noise.

    Returns:
        (the reconstruction ``1 x 3 x H x W`` clamped to [0, 1], the final normalised matching loss without TV).
    """
    def stats(x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = extractor(x, layers=list(layers))
        return feats if kind == "feature" else {k: gram_matrix(v) for k, v in feats.items()}

    with torch.no_grad():
        goal = stats(target)
        energy = {k: v.pow(2).sum().clamp_min(1e-12) for k, v in goal.items()}
    def match(x: torch.Tensor) -> torch.Tensor:
        current = stats(x)
        return sum((current[k] - goal[k]).pow(2).sum() / energy[k] for k in goal)

    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(target.shape, generator=generator).mul_(0.2).add_(0.4).requires_grad_(True)
    # max_eval caps the forward/backward passes, so `steps` fixes the cost whatever the line search does.
    optimizer = torch.optim.LBFGS([image], lr=1.0, max_iter=steps, max_eval=steps, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)
    bar = progress(steps, desc, "eval", leave=False)  # in a log file: a line every 30 s, none for short runs

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = match(image) + tv_weight * total_variation(image)
        loss.backward()
        bar.update(1)
        return loss

    optimizer.step(closure)
    bar.close()
    with torch.no_grad():
        return image.detach().clamp(0, 1), float(match(image))


def _column_title(arch: str, name: str) -> str:
    info, field = layer_info(arch, name), receptive_field(arch, name)
    return f"{name}\n{info.channels} ch, stride {info.stride}\nRF {f'{field}px' if field else '>128px'}"


def inspect_layers(settings: Settings) -> InspectResult:
    """Feature and style reconstructions for every chosen layer -> ``inspect.png`` and ``inspect.json``.

    Written to ``out_dir`` (default ``<paths.outputs_dir>/inspect/<time>``) through a staging folder; when
    ``study.name`` names a study, also copied to ``<studies_dir>/<name>/inspect/`` (the report embeds it) and
    logged to the study's MLflow experiment as a run named ``inspect``.

    Raises:
        LayersearchError: an unknown layer, unreadable image, size below the deepest layer's stride, bad
            numbers, an existing non-empty out_dir; nothing is written.
    """
    started = time.perf_counter()
    section = settings.inspect
    size = _number(section, "size", 1)
    steps = _number(section, "steps", 1)
    tv_weight = _number(section, "tv_weight", 0.0)
    seed = section.seed
    arch, layers, study_name, notes = _choose_layers(settings)
    deepest = layer_info(arch, layers[-1])
    if size < deepest.stride:
        raise InspectError(f"inspect.size={size} is below the stride {deepest.stride} of {deepest.name}: its "
                           f"features would have no pixel; use inspect.size >= {deepest.stride}")
    target = load_target(section.image, size)
    out = Path(settings.out_dir or timestamped_dir(settings.paths.outputs_dir, "inspect"))
    if out.exists() and any(out.iterdir()):
        raise OutputExistsError(f"out_dir {out} already holds files; choose another (nothing was overwritten)")

    weights = weights_for(arch, settings.loss_net.weights)
    # The sweep's metrics (objectives first; `metric_set`), each reconstruction scored against the photo.
    names = metric_set(RESTORATION, settings.study.objectives, settings.metrics.names)
    check_image_side(names, size, f"inspect.size={size} images")
    lpips = settings.metrics.lpips
    uses_lpips = bool(lpips_graded(names))
    random_weights = any_random(weights, lpips.weights if uses_lpips else None)
    extractor = FeatureExtractor(arch, layers, weights, seed=settings.seed)
    rows, feature_images, style_images = [], [], []
    for k, name in enumerate(layers):
        info = layer_info(arch, name)
        row: dict[str, Any] = {"layer": name, "channels": info.channels, "stride": info.stride,
                               "receptive_field": receptive_field(arch, name)}
        for kind, chosen, images in (("feature", [name], feature_images), ("style", layers[: k + 1], style_images)):
            image, match = invert(extractor, target, chosen, kind, steps, tv_weight, seed,
                                  desc=f"{kind} {name} ({k + 1}/{len(layers)})")
            images.append(image[0])
            scores = mean_scores([(image.detach(), target)], 0, lpips.net, lpips.weights, names)
            row[kind] = {"layers": chosen, **scores, "final_loss": match}
        rows.append(row)

    caption = (f"{arch} ({weights_label(weights)} weights), {section.image} at {size}px, L-BFGS {steps} evals, "
               f"TV {tv_weight:g}; rows: target, feature reconstruction of the layer, style (Gram) reconstruction "
               "of the layers up to it")
    if random_weights:
        caption = f"{RANDOM_BANNER}\n{caption}"
    data = {
        "image": section.image, "size": size, "steps": steps, "optimizer": "lbfgs (strong Wolfe)",
        "tv_weight": tv_weight, "seed": seed, "arch": arch, "study": study_name,
        "metrics": list(names),
        "weights": {"loss_net": weights_label(weights),
                    "lpips": f"{lpips.net}/{weights_label(lpips.weights)}" if uses_lpips else "not used"},
        "random_weights": random_weights, "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": round(time.perf_counter() - started, 1), "layers": rows,
    }
    if random_weights:
        data["note"] = RANDOM_BANNER
    staging = staging_dir(out)
    try:
        save_grid(staging / "inspect.png", [_column_title(arch, n) for n in layers],
                  [[target[0]] * len(layers), feature_images, style_images], caption,
                  row_labels=["target", "feature", "style"])
        atomic_write_json(staging / "inspect.json", data)
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if study_name is not None:
        keep = inspect_dir(settings.paths.studies_dir, study_name)
        copy = staging_dir(keep)
        for file in ("inspect.png", "inspect.json"):
            shutil.copyfile(out / file, copy / file)
        replace_dir(copy, keep)
        notes.append(f"copied to {keep} for `layersearch report study.name={study_name}`")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run = log_folder(settings.tracking.uri, study_name, out, "inspect", run_name="inspect",
                             summary=False, random_weights=random_weights)
        notes += [f"warning: {w.message}" for w in caught if "MLflow" in str(w.message)]
        if run:
            notes.append(f"logged to MLflow run {run} (named inspect)")
    return InspectResult(out, rows, random_weights, time.perf_counter() - started, notes, list(names))
