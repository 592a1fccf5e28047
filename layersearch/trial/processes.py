"""Processes a trial starts are ours until reaped: own process group, SIGTERM then SIGKILL to the whole
group, ``wait()``, and a watchdog for the case where we die first.

A parent-death signal reaches only the direct child, and a killed parent runs no cleanup, so each command
trial gets a small watchdog process in its own session. It holds the read end of a pipe whose write end
only we hold: when we exit in any way (SIGKILL included) the pipe closes, and unless we said "done" first
the watchdog stops the trial's whole process group. Grandchildren that stay in the group are stopped too;
only a process that leaves the group on purpose (``setsid``) escapes, as with every group-based tool.

Run as ``python -m layersearch.trial.processes`` it is the watchdog; it imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["Watchdog", "group_members", "start_group", "stop_group"]

_POLL_S = 0.05  # how often a stopping group is looked at; stopping ends as soon as it is empty


def start_group(argv: Sequence[str], env: dict[str, str], cwd: str | Path | None = None) -> subprocess.Popen:
    """Start ``argv`` as the leader of a new session and process group, stdin closed, stdout/stderr piped."""
    return subprocess.Popen(list(argv), env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, read from /proc."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        # After the command name: state, ppid, pgrp, ...
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_empty(pgid: int, seconds: float, leader: subprocess.Popen | None) -> bool:
    """Wait until the group has no live member, at most ``seconds``; True if it emptied."""
    deadline = time.monotonic() + seconds
    while True:
        if leader is not None:
            leader.poll()  # reap the leader as soon as it exits, so it is not counted as alive
        if not group_members(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)


def stop_group(proc: subprocess.Popen | None, grace_s: float, pgid: int | None = None) -> None:
    """Stop a process group and reap its leader: SIGTERM to the group, SIGKILL after ``grace_s``.

    Also used after a normal exit of the leader, to stop what it left running in its group. Returns once
    no member is alive (SIGKILL cannot be ignored) and the leader has been waited for.
    """
    pgid = proc.pid if pgid is None else pgid
    if group_members(pgid):
        _signal_group(pgid, signal.SIGTERM)
        if not _wait_empty(pgid, grace_s, proc):
            _signal_group(pgid, signal.SIGKILL)
            _wait_empty(pgid, 60.0, proc)
    if proc is not None:
        proc.wait()


class Watchdog:
    """Stops a process group if this process dies before saying ``done`` (see the module docstring).

    Use as a context manager around the trial's process; ``watch(pgid)`` names the group to guard.
    """

    def __init__(self, grace_s: float):
        self.grace_s = float(grace_s)
        self._proc: subprocess.Popen | None = None
        self._write: int | None = None

    def __enter__(self) -> Watchdog:
        read, self._write = os.pipe()
        try:
            self._proc = subprocess.Popen([sys.executable, "-m", __name__, str(self.grace_s)], stdin=read,
                                          start_new_session=True, stdout=subprocess.DEVNULL)
        finally:
            os.close(read)
        return self

    def watch(self, pgid: int) -> None:
        os.write(self._write, f"{pgid}\n".encode())

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(OSError):
            os.write(self._write, b"done\n")
        os.close(self._write)
        if self._proc is not None:
            self._proc.wait()


@contextlib.contextmanager
def _ignore_interrupts() -> Iterator[None]:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _watchdog_main(grace_s: float) -> int:
    groups: list[int] = []
    done = False
    with _ignore_interrupts():
        for line in sys.stdin.buffer:  # ends when the write end closes: our parent finished or died
            text = line.strip().decode()
            if text == "done":
                done = True
            elif text.isdigit():
                groups.append(int(text))
        if not done:
            for pgid in groups:
                stop_group(None, grace_s, pgid)
    return 0


if __name__ == "__main__":
    sys.exit(_watchdog_main(float(sys.argv[1])))
