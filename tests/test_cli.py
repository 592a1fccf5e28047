"""The CLI's contract for errors: the user's mistakes are one line and exit 2, bugs are a traceback and exit 1."""

from __future__ import annotations

import os
import subprocess

import pytest
from helpers import console_script, one_error_line

from layersearch import cli
from layersearch.errors import LayersearchError


def test_a_bug_reaches_the_user_as_a_traceback_with_exit_1(monkeypatch, capsys):
    def buggy(cfg):
        return [][0]  # an internal IndexError, not the user's input

    monkeypatch.setitem(cli.COMMANDS, "train", cli.with_config("train", buggy))
    monkeypatch.delenv("LAYERSEARCH_DEBUG", raising=False)
    assert cli.main(["train", "preset=smoke"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "IndexError" in err and "internal error" in err


def test_a_value_error_inside_a_command_is_a_bug_not_bad_input(monkeypatch, capsys):
    # Before the error base, every ValueError was printed as the user's mistake and its traceback hidden.
    def buggy(cfg):
        list(zip([1], [1, 2], strict=True))

    monkeypatch.setitem(cli.COMMANDS, "export", cli.with_config("export", buggy))
    assert cli.main(["export"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_every_user_error_type_shares_the_base():
    from layersearch.config import ConfigCompositionError
    from layersearch.lossnet.layers import LayerError
    from layersearch.lossnet.loss import ConfigError
    from layersearch.lossnet.weights import WeightsError
    from layersearch.search.loop import SpaceError
    from layersearch.search.results import ExportError
    from layersearch.search.storage import StudyError
    from layersearch.search.tracking import TrackingError
    from layersearch.trial.data import DataError
    from layersearch.trial.train import DeviceError, NonFiniteLossError

    for kind in (ConfigCompositionError, LayerError, ConfigError, WeightsError, ExportError, SpaceError,
                 StudyError, TrackingError, DataError, DeviceError, NonFiniteLossError, cli.UsageError):
        assert issubclass(kind, LayersearchError), kind


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "trainer.lr=abc"], "trainer.lr must be a number, got 'abc'"),
        (["sweep", "study.n_trials=many"], "study.n_trials must be a whole number, got 'many'"),
        (["score", "scale=x", "pred_dir=a", "target_dir=b"], "scale must be a whole number"),
        (["ui", "port=http"], "port must be a whole number"),
        (["train", "task.crop=big"], "task.crop must be a whole number"),
        (["train", "--cfg", "yaml"], "--cfg takes 'job'"),
    ],
)
def test_values_of_the_wrong_type_name_their_key(args, expected, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert cli.main(args) == 2
    assert expected in one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_help_and_layers_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from layersearch.cli import main; main(['layers', 'vgg19']); main(['--help']); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "relu5_4" in done.stdout and "usage: layersearch" in done.stdout


def test_a_reader_that_goes_away_is_not_an_internal_error():
    # `layersearch layers vgg16 | head -1`: the pipe's reading end is closed before anything is written, so
    # the first write fails whatever the timing.
    read, write = os.pipe()
    os.close(read)
    proc = subprocess.run([console_script(), "layers", "vgg16"], stdout=write, stderr=subprocess.PIPE, text=True,
                          timeout=120)
    os.close(write)
    assert proc.returncode == 141 and proc.stderr == ""
