"""Every row of the documentation's bad-input table (docs/bad-input.md), run as written: exit 2, one line, the
documented message."""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

import pytest
from helpers import one_error_line

from layersearch.cli import main

TABLE = Path(__file__).resolve().parents[2] / "docs" / "bad-input.md"


def table_rows() -> list[tuple[str, str]]:
    text = TABLE.read_text()
    block = text.split("<!-- bad-input-table")[1].split("<!-- end of bad-input-table")[0]
    rows = []
    for line in block.splitlines():
        cells = re.findall(r"\|\s*`(.*?)`\s*(?=\|)", line + "|")
        if len(cells) == 2 and cells[0].startswith("layersearch "):
            rows.append((cells[0], cells[1]))
    return rows


ROWS = table_rows()


def test_the_table_is_long_enough():
    assert len(ROWS) >= 25


@pytest.mark.parametrize(("command", "message"), ROWS, ids=[c for c, _ in ROWS])
def test_bad_input_row(command, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = shlex.split(command)[1:]
    start = time.monotonic()
    assert main(argv) == 2
    assert time.monotonic() - start < 30  # unreachable servers included
    line = one_error_line(capsys)
    assert line.startswith(f"layersearch {argv[0]}: ")
    assert message in line, line
    assert "s3cret" not in line and ":pw@" not in line
    if "study.name=" in command and "not allowed" in message:
        assert not any(tmp_path.rglob("*")), list(tmp_path.rglob("*"))  # nothing created
