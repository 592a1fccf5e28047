"""Files people read: result grids, JSON, all written atomically (metric tables: ``trial.metric_registry``)."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import OutputError

if TYPE_CHECKING:
    import torch

RANDOM_BANNER = "RANDOM WEIGHTS: these numbers say nothing about which layers are good"


def default_mode(directory: bool = False) -> int:
    """The permissions ``open``/``mkdir`` would give under the current umask (mkstemp/mkdtemp use 0o600/0o700)."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def timestamped_dir(root: str | Path, kind: str) -> Path:
    """``<root>/<kind>/<YYYYmmdd-HHMMSS>``: the default folder of one command's outputs (train, score)."""
    return Path(root) / kind / time.strftime("%Y%m%d-%H%M%S")


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename: readers never see half a file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def atomic_write_json(path: str | Path, data: Any) -> Path:
    def clean(obj: Any) -> Any:
        if isinstance(obj, Mapping):
            return {str(k): clean(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [clean(v) for v in obj]
        return _finite(obj)

    return atomic_write_text(path, json.dumps(clean(data), indent=2) + "\n")


def save_grid(path: str | Path, titles: Sequence[str], rows: Sequence[Sequence[torch.Tensor]],
              caption: str = "", row_labels: Sequence[str] = ()) -> Path:
    """A PNG grid of ``3 x H x W`` images in [0, 1]: one row per example, one titled column per kind.

    ``row_labels`` (optional) name the rows on the left.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = max(len(rows), 1), len(titles)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3 * n_cols, 3 * n_rows + 0.6), squeeze=False)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            ax = axes[r][c]
            ax.imshow(image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0 and r < len(row_labels):
                ax.set_ylabel(row_labels[r], fontsize=11)
            if r == 0:
                ax.set_title(titles[c])
    if caption:
        fig.suptitle(caption, fontsize=9, color="red" if "RANDOM" in caption else "black")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path
