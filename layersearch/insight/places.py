"""Where the insight commands read and write a study's results, and how a finished folder is put in place."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import OutputError

__all__ = ["confirm_path", "inspect_dir", "replace_dir", "report_dir", "staging_dir"]


def report_dir(studies_dir: str | Path, study: str) -> Path:
    """``<studies_dir>/<study>/report``: what `layersearch report` writes."""
    return Path(studies_dir) / study / "report"


def confirm_path(studies_dir: str | Path, study: str) -> Path:
    """Where `layersearch confirm` leaves its results for a study."""
    return Path(studies_dir) / study / "confirm" / "confirm.json"


def inspect_dir(studies_dir: str | Path, study: str) -> Path:
    """Where `layersearch inspect study.name=...` keeps a copy of its latest grid and JSON for the report."""
    return Path(studies_dir) / study / "inspect"


def staging_dir(out: Path) -> Path:
    """A fresh hidden folder beside ``out`` (same filesystem, so ``replace_dir`` is a rename)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-staging-", dir=out.parent))
    except OSError as err:
        raise OutputError(f"cannot write under {out.parent}: {err.strerror or err}") from None
    staging.chmod(0o777 & ~_umask())
    return staging


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def replace_dir(staging: Path, out: Path) -> None:
    """Put ``staging`` at ``out``: readers see the old folder or the new one, never a half-written one."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
