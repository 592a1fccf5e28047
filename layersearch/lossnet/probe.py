"""What a network computes, found by running it once: every named module's output, in the order they finish.

A declared network (``declared.py``) has no hand-written layer table: its layers are its module paths as
``named_modules()`` gives them, and this probe finds which of them can be tapped (a module called once whose
output is an ``N x C x H x W`` feature map or ``N x L x C`` tokens), their shapes, the parameters computed
up to each, whether a later in-place operation overwrites the output (the tap must then copy it), and, for
feature maps, the receptive field measured by the input gradient of the centre output unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

#: The probe's input size (H = W): what every torchvision and timm ImageNet network accepts.
PROBE_SIZE = 224


@dataclass(frozen=True)
class ModuleOutput:
    """One named module as the probe saw it."""

    path: str
    kind: str  # the module's class name
    order: int  # finishing order in the forward (-1: never called)
    calls: int
    shape: tuple[int, ...] | None  # of the (first) output; None when it is not a tensor
    overwritten: bool  # a later in-place operation changed the output tensor
    params: int  # parameters of the modules finished so far (this one included)
    output_type: str  # "tensor" or the type name of what it returned

    @property
    def is_feature_map(self) -> bool:
        return self.shape is not None and len(self.shape) == 4

    @property
    def is_tokens(self) -> bool:
        return self.shape is not None and len(self.shape) == 3

    @property
    def problem(self) -> str | None:
        """Why this module cannot be a layer, or None."""
        if self.calls == 0:
            return "is not called by the network's forward"
        if self.calls > 1:
            return f"is called {self.calls} times in one forward (tap a module called once)"
        if self.shape is None:
            return f"outputs a {self.output_type}, not a tensor"
        if len(self.shape) not in (3, 4) or (len(self.shape) == 4 and self.shape[2] != self.shape[3]):
            # The probe is square, so a feature map's H equals its W: anything else is another layout
            # (timm's N x H x W x C patch embeddings) or not an image at all.
            return (f"outputs a tensor of shape {list(self.shape)} at a square probe; a layer gives "
                    "N x C x H x W feature maps or N x L x C tokens")
        return None


def probe(model: nn.Module, size: int = PROBE_SIZE) -> list[ModuleOutput]:
    """Run ``model`` once on a ``2 x 3 x size x size`` batch and describe every named module (root excluded).

    Every module, tappable or not, is returned in ``named_modules()`` order; ``order`` gives the forward's.
    """
    named = [(path, module) for path, module in model.named_modules() if path]
    seen: dict[str, dict] = {path: {"calls": 0, "order": -1, "out": None, "version": None} for path, _ in named}
    finished: list[str] = []

    def hook_for(path: str):
        def hook(module, args, output):
            record = seen[path]
            record["calls"] += 1
            if record["calls"] == 1:
                record["order"] = len(finished)
                finished.append(path)
                record["out"] = output
                record["version"] = output._version if isinstance(output, torch.Tensor) else None
        return hook

    handles = [module.register_forward_hook(hook_for(path)) for path, module in named]
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, size, size, generator=generator)
    try:
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()

    modules = dict(named)
    counted: set[int] = set()
    params_at: dict[str, int] = {}
    total = 0
    for path in finished:
        for p in modules[path].parameters():
            if id(p) not in counted:
                counted.add(id(p))
                total += p.numel()
        params_at[path] = total
    out = []
    for path, module in named:
        record = seen[path]
        value = record["out"]
        is_tensor = isinstance(value, torch.Tensor)
        out.append(ModuleOutput(
            path=path, kind=type(module).__name__, order=record["order"], calls=record["calls"],
            shape=tuple(value.shape) if is_tensor else None,
            overwritten=is_tensor and value._version != record["version"],
            params=params_at.get(path, 0),
            output_type="tensor" if is_tensor else type(value).__name__,
        ))
    return out


def grid_tokens(tokens: int, prefix: int, size: int = PROBE_SIZE) -> int:
    """How many leading tokens of an ``L``-token output are prefix tokens (class, registers), 0 or ``prefix``.

    Prefix tokens sit in front of a patch grid: an output has them when ``L - prefix`` is the token count of
    a patch grid of the probe (``(size / s)**2`` for a whole stride s) and ``L`` itself is not (a patch
    embedding's output is the grid alone).
    """
    def is_grid(n: int) -> bool:
        side = math.isqrt(n) if n > 0 else 0
        return side > 0 and side * side == n and size % side == 0
    return prefix if prefix and is_grid(tokens - prefix) and not is_grid(tokens) else 0


def receptive_fields(model: nn.Module, paths: list[str], size: int = 128) -> dict[str, int | None]:
    """Receptive field (px) of each feature-map layer: the extent of the input gradient of its centre unit.

    Measured on a ``size x size`` input, one backward per layer; a field that reaches the border is
    reported as None (larger than the probe). Weights with exact zeros in every path would make it smaller;
    a trained or randomly initialised network has none.
    """
    out: dict[str, int | None] = {}
    modules = dict(model.named_modules())
    generator = torch.Generator().manual_seed(0)
    for path in paths:
        captured: list[torch.Tensor] = []

        def stop(module, args, output, captured=captured):
            captured.append(output)
            raise _Stop  # nothing after this layer is needed

        handle = modules[path].register_forward_hook(stop)
        images = torch.rand(1, 3, size, size, generator=generator, requires_grad=True)
        try:
            with torch.enable_grad():
                try:
                    model(images)
                except _Stop:
                    pass
                feature = captured[0]
                h, w = feature.shape[-2:]
                feature[0, :, h // 2, w // 2].sum().backward()
        except Exception:  # not differentiable from the input (an integer op): no field to report
            out[path] = None
            continue
        finally:
            handle.remove()
        rows = images.grad[0].abs().sum(0).sum(1).nonzero()
        cols = images.grad[0].abs().sum(0).sum(0).nonzero()
        if len(rows) == 0:
            out[path] = None
            continue
        extent = int(max(rows[-1] - rows[0], cols[-1] - cols[0])) + 1
        touches = rows[0] == 0 or cols[0] == 0 or rows[-1] == size - 1 or cols[-1] == size - 1
        out[path] = None if touches else extent
    return out


class _Stop(Exception):
    pass
