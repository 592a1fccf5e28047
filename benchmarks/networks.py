"""`make bench` section 6: a loss step on every loss network, relative to VGG-16 relu2_2 in the same run.

Each network is measured at a mid-depth layer, the deepest layer at stride 8 (the output of its third
resolution: VGG-16 relu4_3, ResNet layer2, EfficientNet features.3, ConvNeXt features.3, AlexNet relu2,
SqueezeNet relu3), read from the layer tables rather than chosen by hand. The step is the one of section 2
(output forward + backward, target forward; content term, MSE), each timed between two VGG-16 relu2_2 steps
so that machine load hits both alike; FLOPs from ``torch.utils.flop_counter``; peak memory by section 3's
fresh-process method.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from layersearch.lossnet.layers import ARCHS, layer_table, receptive_field
from layersearch.lossnet.loss import LossConfig, PerceptualLoss

REFERENCE = ("vgg16", "relu2_2")


def mid_layer(arch: str) -> str:
    """The deepest layer of ``arch`` at stride 8."""
    return [info.name for info in layer_table(arch) if info.stride == 8][-1]


def network_loss(arch: str, layer: str, device: torch.device) -> PerceptualLoss:
    config = {"loss_net": {"arch": arch, "weights": "random"}, "content_layers": {layer: 1.0}}
    return PerceptualLoss(LossConfig.from_mapping(config)).to(device)


def network_steps(device: torch.device, output: torch.Tensor, target: torch.Tensor, repeats: int,
                  one_step: Callable, timed: Callable) -> list[dict]:
    """One row per network: its layer, median step time, ratio to VGG-16 relu2_2's, GFLOP, first build time."""
    reference = network_loss(*REFERENCE, device)
    one_step(reference, output, target)
    with FlopCounterMode(display=False) as counter:
        one_step(reference, output, target)
    reference_gflop = counter.get_total_flops() / 1e9
    rows = []
    for arch in ARCHS:
        layer = mid_layer(arch)
        start = time.perf_counter()
        loss_fn = network_loss(arch, layer, device)  # the first of this network in the process: initialises it
        build_s = time.perf_counter() - start
        one_step(loss_fn, output, target)  # warm-up
        with FlopCounterMode(display=False) as counter:
            one_step(loss_fn, output, target)
        # reference, network, reference, network, ..., reference: each network step is compared with the mean
        # of the reference steps just before and after it, so load that drifts or comes in bursts (the machine
        # is shared) hits both sides of each ratio; the row reports the median ratio and its range.
        refs = [timed(lambda: one_step(reference, output, target), device)]
        ratios = []
        for _ in range(repeats):
            network_s = timed(lambda fn=loss_fn: one_step(fn, output, target), device)
            refs.append(timed(lambda: one_step(reference, output, target), device))
            ratios.append(network_s / (0.5 * (refs[-2] + refs[-1])))
        info = next(i for i in layer_table(arch) if i.name == layer)
        rows.append({"arch": arch, "layer": layer, "stride": info.stride, "rf": receptive_field(arch, layer),
                     "channels": info.channels, "ratio": statistics.median(ratios), "ratio_range": (min(ratios), max(ratios)),
                     "gflop": counter.get_total_flops() / 1e9, "reference_gflop": reference_gflop, "build_s": build_s})
        del loss_fn
    return rows


def network_table(rows: list[dict], peaks: dict[str, float] | None, reference_mib: float | None) -> list[str]:
    """Section 6's markdown lines: ratios only (each row's reference time was measured beside it)."""
    ref_gflop = rows[0]["reference_gflop"] if rows else float("nan")
    lines = [f"Reference, VGG-16 relu2_2: {ref_gflop:.2f} GFLOP"
             + (f", {reference_mib:.0f} MiB peak." if reference_mib is not None else "."), "",
             "| network | layer (stride 8) | channels | RF px | **time vs VGG-16 relu2_2** | range | GFLOP | peak MiB "
             "| first build s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        peak = f"{peaks[r['arch']]:.0f}" if peaks else "-"
        low, high = r["ratio_range"]
        lines.append(f"| {r['arch']} | {r['layer']} | {r['channels']} | {r['rf'] or '>128'} | **{r['ratio']:.2f}x** "
                     f"| {low:.2f}-{high:.2f} | {r['gflop']:.2f} | {peak} | {r['build_s']:.2f} |")
    lines += ["", "time vs VGG-16 relu2_2 = median over repeats of (the network's step time / the mean of the VGG-16 "
              "relu2_2 steps timed just before and after it); range: the smallest and largest of those ratios, the "
              "noise of this run (> 1: costlier). First build: the network's first PerceptualLoss in the process, "
              "random weights initialised (later trials share them); about 0 for vgg16 and vgg19, built earlier in "
              "this run."]
    return lines
