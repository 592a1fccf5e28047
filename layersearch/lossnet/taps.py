"""HookTaps: named outputs of any module, taken with forward hooks, the forward stopped after the last one.

The built-in networks are cut into a chain of units (``features.FeatureExtractor``'s truncated trunk). A
declared network's forward is its own (skips, attention, token reshapes), so it runs as it is, with a hook on
each requested module; once every requested output is taken the hook raises, which ends the forward there:
nothing after the deepest layer is computed.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping

import torch
from torch import nn

from .base import LayerError


class _Done(BaseException):
    """Raised by the last hook: every requested output is taken, the rest of the forward is not needed.
    A BaseException, so that a network whose forward catches Exception does not swallow it."""


class HookTaps(nn.Module):
    """Requested layers of a frozen, shared module, by module path.

    Args:
        model: the network (frozen, eval mode; shared by every extractor of the process that uses it).
        layers: module paths to tap.
        copy: the paths whose output a later in-place operation overwrites (the probe found them): their
            output is copied as it is taken.
        prefix: {path: leading tokens to drop} for token outputs (class and register tokens).
    """

    def __init__(self, model: nn.Module, layers: Collection[str], copy: Collection[str] = (),
                 prefix: Mapping[str, int] | None = None):
        super().__init__()
        self.model = model
        self.layers = list(layers)
        self._modules_by_path = {path: model.get_submodule(path) for path in self.layers}
        self._copy = frozenset(copy)
        self._prefix = {k: v for k, v in (prefix or {}).items() if v}

    def train(self, mode: bool = True) -> HookTaps:
        return super().train(False)  # frozen: batch norm and dropout stay in eval mode

    def forward(self, images: torch.Tensor, layers: Collection[str] | None = None) -> dict[str, torch.Tensor]:
        wanted = list(self.layers if layers is None else layers)
        taken: dict[str, torch.Tensor] = {}
        versions: dict[str, int] = {}
        remaining = set(wanted)
        # The module is shared; a hook fires only for the thread that registered it.
        owner = threading.get_ident()

        def hook_for(path: str):
            def hook(module, args, output):
                if threading.get_ident() != owner or path in taken:
                    return None
                if not isinstance(output, torch.Tensor):
                    raise LayerError(f"layer {path} outputs a {type(output).__name__}, not a tensor")
                taken[path] = output.clone() if path in self._copy else output
                versions[path] = taken[path]._version
                remaining.discard(path)
                if not remaining:
                    raise _Done
                return None
            return hook

        handles = [self._modules_by_path[path].register_forward_hook(hook_for(path)) for path in remaining]
        try:
            if remaining:
                self.model(images)
        except _Done:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if remaining:
            raise LayerError(f"layer(s) {', '.join(sorted(remaining))} were not computed by the network's forward")
        for path, tensor in taken.items():
            if tensor._version != versions[path]:
                raise LayerError(f"layer {path}'s output was overwritten in place after it was taken; "
                                 "tap the module that follows it instead")
        return {path: self._drop_prefix(path, taken[path]) for path in wanted}

    def _drop_prefix(self, path: str, tensor: torch.Tensor) -> torch.Tensor:
        drop = self._prefix.get(path, 0)
        return tensor[:, drop:, :] if drop else tensor
