"""Progress in a log file: plain lines at a readable rate instead of tqdm redraws; bars on a terminal."""

from __future__ import annotations

import io
import sys

import pytest
from tqdm.auto import tqdm

from layersearch import progress as p
from layersearch.errors import ConfigValueError


class Clock:
    """A fake monotonic clock: tests move time by hand, nothing sleeps."""

    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch):
    for name in ("LAYERSEARCH_PROGRESS", "LAYERSEARCH_PROGRESS_EVERY_S", "TQDM_DISABLE"):
        monkeypatch.delenv(name, raising=False)


def _lines(**kwargs) -> tuple[p.Lines, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    return p.Lines(file=out, clock=clock, **kwargs), out, clock


def test_per_update_bars_print_one_line_per_finished_unit_with_the_postfix():
    bar, out, clock = _lines(total=40, desc="sweep demo", unit="trial", every_s=0)
    bar.update(0)  # the sweep loop's "nothing finished": no line
    assert out.getvalue() == ""
    for k in range(1, 5):
        clock.t += 20
        bar.set_postfix_str(f"done {k}")
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "sweep demo: 1/40 trials, 20s elapsed, ~13m00s left | done 1"
    assert lines[3] == "sweep demo: 4/40 trials, 1m20s elapsed, ~12m00s left | done 4"
    assert len(lines) == 4  # close adds nothing: the last update was just printed
    assert bar.n == 4 and bar.total == 40


def test_timed_bars_print_at_most_one_line_per_interval_and_the_end_once():
    bar, out, clock = _lines(total=1000, desc="train", unit="step", every_s=30)
    for _ in range(10):  # 10 steps in 25 s, then one more at 29.5 s: before the first interval
        clock.t += 2.5
        bar.update(1)
    clock.t += 4.5
    bar.update(1)
    assert out.getvalue() == ""
    clock.t += 0.5  # 30 s since the start
    bar.update(1)
    for _ in range(5):  # 15 s more: no line
        clock.t += 3
        bar.update(1)
    clock.t += 15  # 30 s after the first line
    bar.update(1)
    bar.update(3)
    bar.set_postfix({"lpips": "0.12"}, psnr_y="29.8")
    bar.close()
    bar.close()  # closing twice prints nothing more
    assert out.getvalue().splitlines() == [
        "train: 12/1000 steps, 30s elapsed, ~41m10s left",
        "train: 18/1000 steps, 1m00s elapsed, ~54m33s left",
        "train: 21/1000 steps, 1m00s elapsed, ~46m37s left | lpips=0.12, psnr_y=29.8",  # the end, once
    ]


def test_a_short_run_prints_nothing_and_an_inner_bar_no_closing_line():
    short, out, clock = _lines(total=4, desc="train", unit="step", every_s=30)
    for _ in range(4):
        clock.t += 1
        short.update(1)
    short.close()
    assert out.getvalue() == ""

    inner, out, clock = _lines(total=100, desc="train", unit="step", every_s=30, leave=False)
    clock.t += 31
    inner.update(1)
    clock.t += 5
    inner.update(99)
    inner.close()  # leave=False: the caller's own line ("trial 3: COMPLETE ...") says how it ended
    assert out.getvalue().splitlines() == ["train: 1/100 steps, 31s elapsed, ~51m09s left"]


def test_a_resumed_bar_estimates_from_the_work_of_this_process():
    bar, out, clock = _lines(total=40, desc="sweep s", unit="trial", every_s=0, initial=30)
    clock.t += 10
    bar.update(1)
    bar.total = 42  # confirm's race may queue more runs: the line follows the new total
    clock.t += 10
    bar.update(1)
    assert out.getvalue().splitlines() == ["sweep s: 31/40 trials, 10s elapsed, ~1m30s left",
                                           "sweep s: 32/42 trials, 20s elapsed, ~1m40s left"]


def test_the_last_line_has_no_estimate_and_a_disabled_bar_prints_nothing():
    bar, out, clock = _lines(total=2, desc="confirm s", unit="run", every_s=0)
    clock.t += 3725
    bar.update(2)
    assert out.getvalue() == "confirm s: 2/2 runs, 1h02m elapsed\n"

    with p.Lines(2, "x", every_s=0, disable=True, file=(out := io.StringIO())) as quiet:
        quiet.update(2)
    assert out.getvalue() == "" and quiet.n == 2 and quiet.closed


def test_bars_on_a_terminal_and_lines_elsewhere_unless_overridden(monkeypatch):
    assert p.use_bars(Tty()) is True
    assert p.use_bars(io.StringIO()) is False
    bar = p.progress(3, "sweep s", "trial", file=Tty(), every_s=0)
    assert isinstance(bar, tqdm)
    bar.close()
    assert isinstance(p.progress(3, "sweep s", "trial", file=io.StringIO()), p.Lines)

    monkeypatch.setenv("LAYERSEARCH_PROGRESS", "lines")
    assert p.use_bars(Tty()) is False and isinstance(p.progress(3, "s", file=Tty()), p.Lines)
    monkeypatch.setenv("LAYERSEARCH_PROGRESS", "bars")
    assert p.use_bars(io.StringIO()) is True
    monkeypatch.setenv("LAYERSEARCH_PROGRESS", "auto")
    assert p.use_bars(io.StringIO()) is False
    monkeypatch.setenv("LAYERSEARCH_PROGRESS", "line")
    with pytest.raises(ConfigValueError, match="LAYERSEARCH_PROGRESS"):
        p.use_bars(io.StringIO())


def test_the_interval_comes_from_the_environment_and_tqdm_disable_silences_lines(monkeypatch):
    monkeypatch.setenv("LAYERSEARCH_PROGRESS", "lines")  # also under `pytest -s` on a terminal
    assert p.progress(10, "train").every_s == p.EVERY_S == 30
    assert p.progress(10, "sweep", every_s=0).every_s == 0
    monkeypatch.setenv("LAYERSEARCH_PROGRESS_EVERY_S", "5")
    assert p.progress(10, "train").every_s == 5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("LAYERSEARCH_PROGRESS_EVERY_S", bad)
        with pytest.raises(ConfigValueError, match="LAYERSEARCH_PROGRESS_EVERY_S"):
            p.progress(10, "train")
    monkeypatch.delenv("LAYERSEARCH_PROGRESS_EVERY_S")
    assert p.progress(10, "train", disable=True).disable
    monkeypatch.setenv("TQDM_DISABLE", "1")  # what local worker processes get
    assert p.progress(10, "sweep", every_s=0).disable


def test_messages_and_lines_keep_their_order_in_one_log(capsys, monkeypatch):
    monkeypatch.setenv("LAYERSEARCH_PROGRESS", "lines")
    log = io.StringIO()
    bar = p.Lines(2, "sweep s", "trial", every_s=0, file=log, clock=Clock())
    p.write("trial 0: COMPLETE", file=log)
    bar.update(1)
    p.write("trial 1: PRUNED", file=log)
    bar.update(1)
    assert [line.split(":")[0] for line in log.getvalue().splitlines()] == ["trial 0", "sweep s", "trial 1", "sweep s"]
    p.write("to stdout, as tqdm.write")
    p.write("to stderr", file=sys.stderr)
    captured = capsys.readouterr()
    assert captured.out == "to stdout, as tqdm.write\n" and captured.err == "to stderr\n"


def test_with_bars_messages_go_through_tqdm_write(monkeypatch):
    said = []
    monkeypatch.setattr(tqdm, "write", classmethod(lambda cls, s, file=None, **kw: said.append((s, file))))
    monkeypatch.setenv("LAYERSEARCH_PROGRESS", "bars")
    p.write("above the bars")
    assert said == [("above the bars", None)]


def test_durations_read_short():
    assert [p.duration(s) for s in (0, 44.6, 60, 80, 3599, 3600, 7500)] == \
        ["0s", "45s", "1m00s", "1m20s", "59m59s", "1h00m", "2h05m"]


@pytest.mark.parametrize(("name", "value", "message"), [
    ("LAYERSEARCH_PROGRESS", "foo", "LAYERSEARCH_PROGRESS='foo': use bars, lines or auto (unset)"),
    ("LAYERSEARCH_PROGRESS_EVERY_S", "soon", "LAYERSEARCH_PROGRESS_EVERY_S='soon': a number of seconds >= 0"),
])
def test_a_bad_progress_variable_is_one_line_before_anything_is_made(name, value, message, tmp_path, monkeypatch,
                                                                      capsys):
    from helpers import one_error_line

    from layersearch.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    assert main(["sweep", "preset=smoke", "study.n_trials=1"]) == 2
    assert one_error_line(capsys) == f"layersearch sweep: {message}"
    assert not any(tmp_path.rglob("*")), list(tmp_path.rglob("*"))  # no study, no MLflow store
