"""Helpers shared by the test modules (fixtures live in conftest.py). On the path via pytest's `pythonpath`."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from layersearch.config import load_settings
from layersearch.settings import Settings, StudySettings


def smoke(*overrides: str) -> Settings:
    """The settings of the tiny random-weights preset."""
    return load_settings(["preset=smoke", *overrides])


_DEFAULT_STUDY_LOCK = threading.Lock()


@functools.cache
def _default_study() -> StudySettings:
    return load_settings([]).study


def storage_args(**overrides: float) -> dict[str, float]:
    """``open_storage``'s heartbeat, grace and retry times: conf/study/default.yaml's unless overridden.

    Composed once per process, under a lock: tests call this from threads, and Hydra's compose is not
    thread-safe.
    """
    with _DEFAULT_STUDY_LOCK:
        study = _default_study()
    return {"heartbeat_s": study.heartbeat_s, "grace_s": study.grace_s, "retry_s": study.db_retry_s, **overrides}


def fake_gpus(monkeypatch, names: list[str], capability: tuple[int, int] = (9, 0)) -> None:
    """This process sees ``names`` as cuda:0, cuda:1, ... (nothing is allocated: only the queries answer)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(names))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(names))

    def name(device=None) -> str:
        return names[device if isinstance(device, int) else torch.device(device or "cuda").index or 0]

    monkeypatch.setattr(torch.cuda, "get_device_name", name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)


def console_script() -> str:
    """The installed `layersearch` command (next to this Python, else on PATH)."""
    beside = Path(sys.executable).parent / "layersearch"
    found = str(beside) if beside.exists() else shutil.which("layersearch")
    if not found:
        pytest.fail("the layersearch console script is not installed (pip install -e .)")
    return found


def run_cli(args: list[str], cwd: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """Run the console script in ``cwd`` and capture its output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    return subprocess.run([console_script(), *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def user_lines(stderr: str) -> list[str]:
    """stderr without warning lines: what the user is told."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("warning:")]


def one_error_line(capsys) -> str:
    """The command's error: exactly one `layersearch <command>: ...` line and no traceback on stderr."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("layersearch ")]
    assert len(lines) == 1, lines
    return lines[0]


def wait_until(predicate, what: str, proc: subprocess.Popen | None = None, limit: float = 600):
    """Poll ``predicate()`` until it returns something truthy, and return that.

    Waits for an event, not for a guess of how long it takes: it stops at once, showing the process's
    output, when ``proc`` has exited first; ``limit`` only guards against a hang.
    """
    end = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out = proc.communicate()[0] if proc.stdout is not None else ""
            pytest.fail(f"the process exited with status {proc.returncode} before {what}:\n{(out or '')[-3000:]}")
        if time.monotonic() > end:
            pytest.fail(f"no {what} after {limit:g} s (a hang)")
        time.sleep(0.05)


class Watched:
    """A command run in its own process group, its output collected as it comes.

    Waits stop as soon as the process exits (showing its output), and leaving the block kills the whole
    group (a sweep's workers, a server's children) if it is still running.
    """

    def __init__(self, args: list[str], cwd: Path, **env: str):
        import threading

        self.proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **env}, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self._reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, predicate, timeout: float, what: str):
        """The first true value of ``predicate()``; fails when the process exits first or ``timeout`` passes."""
        end = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if self.proc.poll() is not None:
                self._reader.join(10)
                value = predicate()
                if value:
                    return value
                pytest.fail(f"waiting for {what}: the process exited ({self.proc.returncode}) first:\n"
                            f"{self.output[-4000:]}")
            if time.monotonic() > end:
                pytest.fail(f"waiting for {what}: nothing after {timeout:g} s; output so far:\n{self.output[-4000:]}")
            time.sleep(0.2)

    def finish(self, timeout: float) -> int:
        """The exit status, once the process has ended (fails after ``timeout`` with the output)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running after {timeout:g} s; output so far:\n{self.output[-4000:]}")
        self._reader.join(10)
        return self.proc.returncode

    def __enter__(self) -> Watched:
        return self

    def __exit__(self, *exc) -> None:
        import contextlib
        import signal

        with contextlib.suppress(ProcessLookupError):  # the group's children too, even if the leader has ended
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._reader.join(10)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
