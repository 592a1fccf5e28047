"""The documentation's generated configuration reference covers every key of every option in conf/."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
from hooks import option_keys, render_reference  # noqa: E402


def _flat(data, written: set[str], prefix=""):
    """Every key of the parsed file; a mapping written on one line (``{relu2_2: 1.0}``) is one value."""
    for key, value in (data or {}).items():
        if key == "defaults" and not prefix:
            continue
        if isinstance(value, dict) and value and f"{prefix}{key}" not in written:
            yield from _flat(value, written, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_the_reference_lists_every_key_of_every_option():
    page = render_reference(ROOT / "conf")
    for path in sorted((ROOT / "conf").rglob("*.yaml")):
        text = path.read_text()
        keys = {k for k, value, _ in option_keys(text) if value}
        assert keys == set(_flat(yaml.safe_load(text), keys)), path
        group = path.parent.name
        if path.parent != ROOT / "conf":
            assert f"### `{group}={path.stem}`" in page
            is_global = "# @package _global_" in text.split("\n", 1)[0]
            for key in keys:
                assert f"`{key if is_global else group + '.' + key}`" in page, (path, key)


def test_comments_are_read_inline_or_from_the_lines_above():
    rows = option_keys("# a file\n# what x is\nx: 1\ny: 'a # b'  # the y\nz:\n  w: [1, 2]   # w\n")
    assert rows == [("x", "1", "what x is"), ("y", "'a # b'", "the y"), ("z.w", "[1, 2]", "w")]
