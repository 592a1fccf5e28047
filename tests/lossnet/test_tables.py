"""layer_tables.json is what the generator makes from the installed torchvision: the tables are never typed."""

from __future__ import annotations

import json

import pytest

from layersearch.lossnet.layers import TABLES_FILE, TORCHVISION_ARCHS
from layersearch.lossnet.tables import network_table, render


@pytest.mark.parametrize("arch", TORCHVISION_ARCHS)
def test_committed_table_is_generated(arch):
    committed = json.loads(TABLES_FILE.read_text())["networks"][arch]
    assert network_table(arch) == committed, "run `python -m layersearch.lossnet.tables` and commit the file"


def test_file_lists_exactly_the_supported_networks_and_renders_back():
    tables = json.loads(TABLES_FILE.read_text())
    assert tuple(tables["networks"]) == TORCHVISION_ARCHS
    assert render(tables) == TABLES_FILE.read_text()
