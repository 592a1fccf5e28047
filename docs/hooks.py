"""MkDocs hook: the configuration reference is generated from conf/ at every build, so it cannot drift.

Every config group, every option of it and every key, with its default and the comment the YAML file gives
it (comments are read from the text, which YAML parsers drop).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

KEY = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w.-]*):(?P<rest>.*)$")
COMMENT = re.compile(r"(^|\s)#\s?(?P<text>.*)$")


def _split_comment(rest: str) -> tuple[str, str]:
    """``value  # comment`` -> (value, comment); a ``#`` inside quotes is part of the value."""
    quote = None
    for i, ch in enumerate(rest):
        if ch in "'\"":
            quote = None if quote == ch else (quote or ch)
        elif ch == "#" and quote is None and (i == 0 or rest[i - 1].isspace()):
            return rest[:i].strip(), rest[i + 1:].strip()
    return rest.strip(), ""


def option_keys(text: str) -> list[tuple[str, str, str]]:
    """``(dotted key, default as written, comment)`` for every key of a config file, in file order."""
    rows, stack = [], []  # stack: (indent, key) of the mappings we are inside
    above: list[str] = []  # comment lines right above a key describe it when it has no comment of its own
    for number, line in enumerate(text.splitlines()):
        if line.lstrip().startswith("#"):
            if number and not line.startswith("# @package"):
                above.append(line.strip().lstrip("#").strip())
            continue
        if not line.strip() or line.lstrip().startswith("-"):
            above = []
            continue
        match = KEY.match(line)
        if match is None:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if not stack and match["key"] == "defaults":
            stack.append((indent, "defaults"))
            continue
        if stack and stack[0][1] == "defaults":
            continue
        value, comment = _split_comment(match["rest"])
        comment, above = comment or " ".join(above), []
        dotted = ".".join([k for _, k in stack] + [match["key"]])
        if value:
            rows.append((dotted, value, comment))
        else:
            stack.append((indent, match["key"]))
            if comment:
                rows.append((dotted, "", comment))
    return rows


def _description(text: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith("#") and not line.startswith("# @package")]
    return lines[0].lstrip("# ").strip() if lines else ""


def _cell(text: str) -> str:
    """A table cell: pipes escaped; ``<`` and ``>`` outside code spans escaped (``<time>`` is not a tag)."""
    parts = text.replace("|", "\\|").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;") for i, p in enumerate(parts))


def _table(rows: list[tuple[str, str, str]], prefix: str) -> list[str]:
    if not rows:
        return ["(no keys)", ""]
    out = ["| key | default | what it is |", "| --- | --- | --- |"]
    out += [f"| `{prefix}{key}` | `{_cell(value)}` | {_cell(comment)} |" if value else
            f"| `{prefix}{key}` | | {_cell(comment)} |" for key, value, comment in rows]
    return out + [""]


def render_reference(conf: Path) -> str:
    """The Markdown page: the primary config, then each group and its options."""
    primary = (conf / "config.yaml").read_text()
    defaults = {}
    for entry in yaml.safe_load(primary).get("defaults", []):
        if isinstance(entry, dict):
            defaults.update({str(k): "null" if v is None else v for k, v in entry.items()})
    lines = ["# Configuration reference", "",
             "Generated from `conf/` at every build of this site. Every command except `layers` composes "
             "`conf/config.yaml` with your overrides (`key=value`, `group=option`); `layersearch <command> --cfg job` "
             "prints the result. `@package _global_` options (presets, literature losses) set keys anywhere in the "
             "tree.", "", "## The primary config (`conf/config.yaml`)", "", _description(primary), ""]
    lines += ["Default option of each group: " + ", ".join(f"`{g}={o}`" for g, o in defaults.items()), ""]
    lines += _table(option_keys(primary), "")
    groups = sorted(p for p in conf.iterdir() if p.is_dir() and any(p.glob("*.yaml")))
    for group in groups:
        lines += [f"## `{group.name}`", ""]
        if group.name in defaults:
            lines += [f"Default: `{group.name}={defaults[group.name]}`.", ""]
        for option in sorted(group.glob("*.yaml")):
            text = option.read_text()
            is_global = "# @package _global_" in text.split("\n", 1)[0]
            lines += [f"### `{group.name}={option.stem}`", "", _description(text), ""]
            lines += _table(option_keys(text), "" if is_global else f"{group.name}.")
    return "\n".join(lines) + "\n"


def on_files(files, config):
    from mkdocs.structure.files import File

    conf = Path(config["docs_dir"]).resolve().parent / "conf"
    files.append(File.generated(config, "reference/configuration.md", content=render_reference(conf)))
    return files
