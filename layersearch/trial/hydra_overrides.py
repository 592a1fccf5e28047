"""The sampled loss as Hydra command-line overrides: what ``{overrides:KEY}`` in ``trial.cmd`` becomes.

A Hydra app (``@hydra.main``, the lightning-hydra-template layout) takes its settings as overrides, so a
command trial hands it the layer config under a key the app reads, e.g. ``model.perceptual``::

    ++model.perceptual=null
    ++model.perceptual={loss_net:{arch:vgg16,weights:imagenet},content_layers:{relu2_2:1.0},...}

Two overrides, because Hydra merges a dict override into the dict already there: the app's default layers
would survive next to the sampled ones. Setting the key to null first makes the second one a replacement;
``++`` adds the key when the app's config lacks it and overrides it when it has it. Each override is parsed
back with Hydra's own parser before the command runs, so a layer name Hydra cannot spell fails the trial
with one line instead of reaching the app mangled.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from .handle import TrialFailed

__all__ = ["KEY_PATTERN", "hydra_overrides", "hydra_value"]

#: A config key as the placeholder names it: dotted identifiers (``model.perceptual``, ``loss``).
KEY_PATTERN = re.compile(r"[A-Za-z_][\w\-]*(\.[A-Za-z_][\w\-]*)*")
_BARE = re.compile(r"[A-Za-z_][\w.\-/]*")  # a string Hydra reads as itself without quotes
_KEYWORDS = {"true", "false", "null", "nan", "inf"}


def hydra_value(value: Any) -> str:
    """``value`` (plain YAML types) in Hydra's override grammar."""
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{key}:{hydra_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(item) for item in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TrialFailed(f"{{overrides:...}}: {value} cannot be a loss setting")
        return repr(value)
    text = str(value)
    if _BARE.fullmatch(text) and text.lower() not in _KEYWORDS:
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _parsed(override: str) -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides([override])[0].value()


def hydra_overrides(key: str, layer_config: Mapping[str, Any]) -> list[str]:
    """The overrides that set ``key`` to ``layer_config`` in a Hydra app (see the module docstring).

    Raises:
        TrialFailed: Hydra's parser does not read the config back as it is (a layer name it cannot spell).
    """
    override = f"++{key}={hydra_value(dict(layer_config))}"
    try:
        back = _parsed(override)
    except Exception as err:  # Hydra's parser raises its own OverrideParseException with a long text
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrialFailed(f"{{overrides:{key}}}: Hydra cannot parse the sampled config as an override: {first}"
                          ) from None
    if back != dict(layer_config):
        raise TrialFailed(f"{{overrides:{key}}}: Hydra reads the sampled config back differently: "
                          f"{back!r} != {dict(layer_config)!r}")
    return [f"++{key}=null", override]
