"""Progress that reads well on a terminal and in a log file.

On a terminal, `progress` is a tqdm bar and `write` is ``tqdm.write`` (it prints above the bars without
breaking them), as always. When the bars' stream (stderr) is not a terminal (SLURM, CI, ``> run.log 2>&1``),
a bar's carriage returns and cursor moves would fill the file with thousands of redraws, so progress becomes
plain lines instead::

    sweep demo: 3/40 trials, 1m20s elapsed, ~16m27s left | done 3 pruned 0 failed 0 | best ...

Bars counted in whole units of work (a sweep's trials, confirm's runs; ``every_s=0``) print one line per
update. Bars of fast inner loops (a trial's training steps) print at most one line every
``LAYERSEARCH_PROGRESS_EVERY_S`` seconds (default 30), and nothing at all when the loop ends before the
first interval: short trainings stay silent, their trial's own line says how they ended.

``LAYERSEARCH_PROGRESS=bars`` forces tqdm bars and ``LAYERSEARCH_PROGRESS=lines`` forces plain lines
(unset, empty or ``auto``: decided by the stream). ``TQDM_DISABLE`` (set for local worker processes)
silences the plain lines too, as it does tqdm's bars.

A shared top-level module: it imports no room of layersearch (see the import-linter contracts).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from .errors import ConfigValueError

__all__ = ["EVERY_S", "Lines", "check_environment", "progress", "use_bars", "write"]

#: Seconds between two plain lines of a bar with ``every_s=None``, unless LAYERSEARCH_PROGRESS_EVERY_S says.
EVERY_S = 30.0

_MODES = ("", "auto", "bars", "lines")


def use_bars(file: IO[str] | None = None) -> bool:
    """Whether progress on ``file`` (default stderr) is drawn as tqdm bars rather than printed as lines."""
    mode = os.environ.get("LAYERSEARCH_PROGRESS", "").strip().lower()
    if mode not in _MODES:
        raise ConfigValueError(f"LAYERSEARCH_PROGRESS={mode!r}: use bars, lines or auto (unset)")
    if mode in ("bars", "lines"):
        return mode == "bars"
    stream = sys.stderr if file is None else file
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream: not a terminal
        return False


def every_s_default() -> float:
    """LAYERSEARCH_PROGRESS_EVERY_S, else `EVERY_S`."""
    text = os.environ.get("LAYERSEARCH_PROGRESS_EVERY_S", "").strip()
    if not text:
        return EVERY_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        raise ConfigValueError(f"LAYERSEARCH_PROGRESS_EVERY_S={text!r}: a number of seconds >= 0")
    return value


def check_environment() -> None:
    """One line (ConfigValueError) for a bad LAYERSEARCH_PROGRESS or LAYERSEARCH_PROGRESS_EVERY_S, called by
    the CLI before a command starts: found at the first progress line, it would leave a study half made."""
    use_bars()
    every_s_default()


def write(message: str, file: IO[str] | None = None) -> None:
    """Print one message line (to stdout by default, as ``tqdm.write``) without breaking any bar.

    With bars (stderr is a terminal) ``tqdm.write`` clears the bars, prints and redraws them; without, a plain
    print, flushed so that messages and progress lines (on stderr) keep their order in a shared log file.
    """
    if use_bars():
        from tqdm.auto import tqdm

        tqdm.write(message, file=file)
    else:
        print(message, file=sys.stdout if file is None else file, flush=True)


def duration(seconds: float) -> str:
    """``45s``, ``1m20s``, ``2h05m``: short enough for a progress line."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Lines:
    """A progress bar as plain lines, for a stream that is not a terminal; the part of tqdm we use.

    Args:
        every_s: 0 prints a line at every update that moves ``n``; > 0 at most one line per ``every_s``
            seconds, and none if the work ends before the first interval.
        leave: False (an inner bar, which tqdm clears at the end) prints no closing line: the caller's own
            line says how the work ended.
        clock: seconds, monotonic; tests pass a fake one.
    """

    def __init__(self, total: float | None, desc: str = "", unit: str = "it", every_s: float = EVERY_S,
                 leave: bool = True, disable: bool = False, initial: float = 0, file: IO[str] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.leave, self.disable, self.file, self.clock = leave, disable, file, clock
        self.n = self.initial = initial
        self.postfix = ""
        self.started = self.last_line_at = clock()
        self.printed_n: float | None = None  # n at the last line printed; None: no line yet
        self.closed = False

    # --- what the call sites use of tqdm ------------------------------------------------------------

    def update(self, n: float = 1) -> None:
        if not n:
            return  # the sweep loop updates by 0 when nothing finished: no new line
        self.n += n
        now = self.clock()
        if self.every_s <= 0 or now - self.last_line_at >= self.every_s:
            self._print(now)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        # The final state once, if the bar printed anything and moved since; a bar that never printed (its
        # work ended before the first interval) stays silent.
        if self.leave and self.printed_n is not None and self.printed_n != self.n:
            self._print(self.clock())

    def __enter__(self) -> Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the line ------------------------------------------------------------------------------------

    def line(self, now: float) -> str:
        """``desc: n/total units, elapsed, ~left | postfix``."""
        units = self.unit if self.unit.endswith("s") else self.unit + "s"
        count = f"{_number(self.n)}/{_number(self.total)}" if self.total else _number(self.n)
        elapsed = now - self.started
        parts = [f"{count} {units}", f"{duration(elapsed)} elapsed"]
        done_here = self.n - self.initial  # the rate of this process: resumed work came for free
        if self.total and self.n < self.total and done_here > 0 and elapsed > 0:
            parts.append(f"~{duration((self.total - self.n) * elapsed / done_here)} left")
        text = (f"{self.desc}: " if self.desc else "") + ", ".join(parts)
        return text + (f" | {self.postfix}" if self.postfix else "")

    def _print(self, now: float) -> None:
        self.last_line_at, self.printed_n = now, self.n
        if not self.disable:
            print(self.line(now), file=sys.stderr if self.file is None else self.file, flush=True)


def _number(x: float | None) -> str:
    return "?" if x is None else f"{x:g}"


def progress(total: float | None, desc: str = "", unit: str = "it", leave: bool = True, position: int | None = None,
             disable: bool = False, initial: float = 0, file: IO[str] | None = None,
             every_s: float | None = None) -> Any:
    """A tqdm bar on a terminal, else `Lines` (see the module docstring); same calls: update, close...

    Args:
        every_s: seconds between plain lines; 0: one line per update (units that are whole trials or runs);
            None: LAYERSEARCH_PROGRESS_EVERY_S, default 30 (fast inner loops). Bars ignore it.
        disable: no bar and no lines at all (``trainer.progress=false``).
    """
    if use_bars(file):
        from tqdm.auto import tqdm

        # disable only when asked, so that tqdm's own TQDM_DISABLE still applies otherwise, as before.
        extra = {"disable": True} if disable else {}
        return tqdm(total=total, desc=desc, unit=unit, leave=leave, position=position, initial=initial, file=file,
                    **extra)
    quiet = disable or bool(os.environ.get("TQDM_DISABLE"))  # tqdm reads any non-empty value as true
    return Lines(total, desc, unit, every_s_default() if every_s is None else every_s, leave=leave, disable=quiet,
                 initial=initial, file=file)
