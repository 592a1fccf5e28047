"""The user's command as a trial: ``trial.cmd='python train.py --loss {loss_config} --steps {steps}'``.

The command runs in its own process group with stdin closed; its output goes to ``stdout.log`` and
``stderr.log`` in the trial folder (and, with ``trial.echo=true``, to the console prefixed ``[trial N]``).
It reports by appending JSON lines to ``{metrics}`` (see trial/env.py for the whole file contract); each
line is passed to the trial's ``report`` as soon as it is complete, so the pruner can stop the command
early. Stopping means SIGTERM to the whole group, SIGKILL after ``trial.kill_grace_s``, then reaping; a
watchdog does the same if the sweep itself dies (trial/processes.py).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import string
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from ..errors import ConfigValueError, LayersearchError
from ..settings import LpipsSettings, TrialSettings
from .env import ENV, write_trial_files
from .handle import Trial, TrialFailed
from .hydra_overrides import KEY_PATTERN, hydra_overrides
from .processes import Watchdog, start_group, stop_group

__all__ = ["CommandError", "CommandTraining", "PLACEHOLDERS", "MetricsReader"]

PLACEHOLDERS = tuple(ENV)
#: ``{overrides:KEY}``: the sampled layer config as Hydra overrides of KEY (trial/hydra_overrides.py).
OVERRIDES = "overrides"
_STDERR_TAIL_LINES = 8
_STAND_ALONE = re.compile(r"\{" + OVERRIDES + r":([^{}]*)\}")


class CommandError(LayersearchError, ValueError):
    """A ``trial.cmd`` that cannot run (empty, unknown placeholder, program not found); one line."""


def _positive(value: Any, key: str, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigValueError(f"{key} must be a positive number of seconds{' or null' if allow_none else ''}, "
                               f"got {value!r}")
    return float(value)


def _fields(template: str) -> list[tuple[str, str]]:
    """The placeholders in ``template`` as (name, format spec); a CommandError for a malformed or unknown one."""
    try:
        fields = [(name, spec or "") for _, name, spec, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise CommandError(f"trial.cmd: {err} (write a literal brace as {{{{ or }}}})") from None
    valid = ", ".join([*(f"{{{p}}}" for p in PLACEHOLDERS), f"{{{OVERRIDES}:KEY}}"])
    for name, spec in fields:
        if name == OVERRIDES:
            if not KEY_PATTERN.fullmatch(spec):
                raise CommandError(f"trial.cmd: {{{OVERRIDES}:KEY}} names the config key of a Hydra app that "
                                   f"takes the loss, e.g. {{{OVERRIDES}:model.perceptual}}; got {{{name}:{spec}}}")
        elif name not in PLACEHOLDERS:
            shown = "{}" if name == "" else f"{{{name}}}"
            raise CommandError(f"trial.cmd: unknown placeholder {shown}; valid: {valid}")
    return fields


class _Filler(string.Formatter):
    """Fills a ``trial.cmd`` token: each placeholder's value, ``{overrides:KEY}`` as Hydra overrides."""

    def __init__(self, values: Mapping[str, str], layer_config: Mapping[str, Any], quote: Callable[[str], str]):
        super().__init__()
        self.values, self.layer_config, self.quote = values, layer_config, quote

    def get_value(self, key: Any, args: Any, kwargs: Any) -> Any:
        return OVERRIDES if key == OVERRIDES else self.quote(self.values[key])

    def format_field(self, value: Any, format_spec: str) -> str:
        if value is OVERRIDES:
            return " ".join(self.quote(o) for o in hydra_overrides(format_spec, self.layer_config))
        return format(value, format_spec)


class MetricsReader:
    """Reads the complete JSON lines appended to a file since the last call (a partial last line waits)."""

    def __init__(self, path: Path, warn: Callable[[str], None]):
        self.path, self.warn = path, warn
        self._offset, self._partial, self._line_no = 0, b"", 0

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        out = []
        for raw in lines:
            self._line_no += 1
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                if not isinstance(line, dict):
                    raise ValueError("not a JSON object")
                if "step" in line and (isinstance(line["step"], bool) or not isinstance(line["step"], int)):
                    raise ValueError(f"step must be a whole number, got {line['step']!r}")
                bad = [k for k, v in line.items() if k not in ("step", "final")
                       and (isinstance(v, bool) or not isinstance(v, (int, float)))]
                if bad:
                    raise ValueError(f"values of {', '.join(bad)} are not numbers")
                if "step" not in line and not line.get("final"):
                    raise ValueError('no "step" (only a line with "final": true may omit it)')
            except ValueError as err:
                self.warn(f"skipped malformed line {self._line_no} of {self.path.name}: {err}: "
                          f"{raw[:120].decode(errors='replace')!r}")
                continue
            out.append(line)
        return out


def _pump(stream: IO[bytes], file: Path, echo: Callable[[str], None] | None) -> None:
    with open(file, "ab") as out:
        for raw in iter(stream.readline, b""):
            out.write(raw)
            out.flush()
            if echo is not None:
                echo(raw.decode(errors="replace").rstrip("\n"))
    stream.close()


def _tail(file: Path, lines: int = _STDERR_TAIL_LINES, chars: int = 1500) -> str:
    try:
        with open(file, "rb") as handle:
            handle.seek(max(0, file.stat().st_size - 16384))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[-chars:]


class CommandTraining:
    """``training(trial) -> metrics``: runs ``trial.cmd`` with the trial's files and reads its reports.

    Args:
        settings: the ``trial`` config group (``cmd``, ``shell``, ``echo``, ``timeout_s``, ``kill_grace_s``,
            ``poll_s``, ``score_dir``).
        lpips: ``metrics.lpips`` (net and weights), for `Trial.score` in the command and for ``score_dir``.
        val_dir: ``data.val_dir``, the targets of ``score_dir`` outputs.
        scale: pixels shaved from each border when ``score_dir`` outputs are scored (top-level ``scale``).
        loss_seed: seeds random loss-network weights (top-level ``seed``), as in-process trials do.
        log: where warnings and echoed output lines go (the sweep's console).
    """

    kind = "command"
    user_code = True

    def __init__(self, settings: TrialSettings, lpips: LpipsSettings, val_dir: str | None = None,
                 scale: int = 0, loss_seed: int = 0, log: Callable[[str], None] = print):
        self.template = (settings.cmd or "").strip()
        self.shell, self.echo = bool(settings.shell), bool(settings.echo)
        self.timeout_s, self.kill_grace_s, self.poll_s = settings.timeout_s, settings.kill_grace_s, settings.poll_s
        self.score_dir = settings.score_dir
        self.lpips, self.val_dir, self.scale, self.loss_seed, self.log = lpips, val_dir, int(scale), loss_seed, log
        self._checked = False

    @property
    def label(self) -> str:
        return self.template

    def prepare(self) -> None:
        self.check()

    def check(self) -> None:
        """Everything that can be known before a trial runs; a one-line error otherwise."""
        if not self.template:
            raise CommandError("trial=command needs trial.cmd, e.g. trial.cmd='python train.py --loss {loss_config}'")
        self.timeout_s = _positive(self.timeout_s, "trial.timeout_s", allow_none=True)
        self.kill_grace_s = _positive(self.kill_grace_s, "trial.kill_grace_s")
        self.poll_s = _positive(self.poll_s, "trial.poll_s")
        _fields(self.template)
        if not self.shell:
            self._check_overrides_stand_alone()
        if self.score_dir and not self.val_dir:
            raise CommandError("trial.score_dir needs the validation targets: data=folder data.val_dir=...")
        if self.score_dir and not Path(str(self.val_dir)).is_dir():
            raise CommandError(f"trial.score_dir: data.val_dir {self.val_dir} is not a folder")
        if not self.shell:
            self._check_program()
        self._checked = True

    def _check_program(self) -> None:
        program = self._tokens()[0]
        if _fields(program):
            return  # the program itself is a placeholder: known only per trial
        found = os.access(program, os.X_OK) and Path(program).is_file() if "/" in program else shutil.which(program)
        if not found:
            raise CommandError(f"trial.cmd: program {program!r} not found"
                               + ("" if "/" in program else " on PATH") + " (or use trial.shell=true)")

    def _check_overrides_stand_alone(self) -> None:
        # Without a shell, {overrides:KEY} becomes several arguments: it cannot share a token with other text.
        for token in self._tokens():
            if any(name == OVERRIDES for name, _ in _fields(token)) and not _STAND_ALONE.fullmatch(token):
                raise CommandError(f"trial.cmd: {{{OVERRIDES}:KEY}} becomes several arguments and must stand "
                                   f"alone, not inside {token!r}")

    def _tokens(self) -> list[str]:
        try:
            return shlex.split(self.template)
        except ValueError as err:
            raise CommandError(f"trial.cmd cannot be split into arguments: {err}") from None

    def argv(self, values: Mapping[str, str], layer_config: Mapping[str, Any] | None = None) -> list[str]:
        """The command line for one trial: each placeholder filled in (quoted for the shell with shell=true);
        ``{overrides:KEY}`` becomes the Hydra overrides that set KEY to ``layer_config``."""
        config = dict(layer_config or {})
        if self.shell:
            return ["/bin/sh", "-c", _Filler(values, config, shlex.quote).format(self.template)]
        argv: list[str] = []
        for token in self._tokens():
            match = _STAND_ALONE.fullmatch(token)
            if match:
                argv += hydra_overrides(match.group(1), config)
            else:
                argv.append(_Filler(values, config, str).format(token))
        return argv

    def __call__(self, trial: Trial) -> dict[str, float]:
        if not self._checked:
            self.check()
        score_dir = trial.dir / str(self.score_dir) if self.score_dir else None
        if score_dir is not None:
            score_dir.mkdir(parents=True, exist_ok=True)
        metrics_file = trial.dir / "metrics.jsonl"
        values = write_trial_files(trial, metrics_file, score_dir, self.lpips, self.loss_seed)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **{ENV[k]: v for k, v in values.items()}}
        reader = MetricsReader(metrics_file, lambda text: self.log(f"trial {trial.number}: warning: {text}"))
        last, final = self._run(trial, self.argv(values, trial.layer_config), env, reader)
        if score_dir is not None:
            final = {**(final or last or {}), **self._score(trial, score_dir)}
        final = final or last
        if not final:
            raise TrialFailed(f"the command wrote no metrics line to {metrics_file.name} (objectives "
                              f"{', '.join(trial.objectives)}); see stdout.log and stderr.log in {trial.dir}")
        return {k: v for k, v in final.items() if k not in ("step", "final")}

    def _run(self, trial: Trial, argv: list[str], env: dict[str, str], reader: MetricsReader):
        """Run the command to its end (or until pruned, timed out, interrupted); (last line, final line)."""
        last: dict[str, Any] | None = None
        final: dict[str, Any] | None = None
        echo = (lambda text: self.log(f"[trial {trial.number}] {text}")) if self.echo else None
        with Watchdog(self.kill_grace_s) as watchdog:
            proc = start_group(argv, env, cwd=os.getcwd())
            watchdog.watch(proc.pid)
            pumps = [threading.Thread(target=_pump, args=(stream, trial.dir / name, echo), daemon=True)
                     for stream, name in ((proc.stdout, "stdout.log"), (proc.stderr, "stderr.log"))]
            for pump in pumps:
                pump.start()
            started = time.monotonic()
            try:
                while True:
                    wait = self.poll_s
                    if self.timeout_s is not None:
                        wait = max(0.0, min(wait, started + self.timeout_s - time.monotonic()))
                    try:
                        proc.wait(timeout=wait)
                        exited = True
                    except subprocess.TimeoutExpired:
                        exited = False
                    for line in reader.read():
                        last = line
                        final = line if line.get("final") else final
                        self._report(trial, line)
                    if exited:
                        break
                    if self.timeout_s is not None and time.monotonic() - started >= self.timeout_s:
                        raise TrialFailed(f"timeout: the command ran longer than trial.timeout_s={self.timeout_s:g} s")
            finally:
                # Whatever ended the wait (exit, pruning, timeout, Ctrl-C, SIGTERM), nothing of the group
                # outlives the trial; after a normal exit this stops what the command left running.
                stop_group(proc, self.kill_grace_s)
                for pump in pumps:
                    pump.join(timeout=10)
        if proc.returncode != 0:
            how = (f"was killed by signal {-proc.returncode}" if proc.returncode < 0
                   else f"exited with status {proc.returncode}")
            tail = _tail(trial.dir / "stderr.log")
            raise TrialFailed(f"the command {how}" + (f"; stderr: {tail}" if tail else " (stderr was empty)"))
        return last, final

    @staticmethod
    def _report(trial: Trial, line: Mapping[str, Any]) -> None:
        step = line.get("step")
        if step is None:
            return
        if line.get("final") and trial.last_step is not None and step <= trial.last_step:
            return  # the final line repeats the last step's values: nothing new for the pruner
        trial.report(step, **{k: v for k, v in line.items() if k not in ("step", "final")})

    def _score(self, trial: Trial, score_dir: Path) -> dict[str, float]:
        from .score import score_folders

        try:
            result = score_folders(str(score_dir), str(self.val_dir), self.scale, self.lpips.net,
                                   self.lpips.weights, out=trial.dir / "scores.json", names=trial.scored)
        except LayersearchError as err:  # the command's images, not the user's config, are at fault
            raise TrialFailed(f"scoring the images in {score_dir}: {err}") from None
        return dict(result["mean"])
