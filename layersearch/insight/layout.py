"""One document, two renderings: a list of blocks -> a self-contained HTML page and the same in Markdown.

The report builds its content once as blocks (headings, paragraphs, tables, images beside the file), so the
HTML and the Markdown can never say different things.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Cell", "Heading", "Image", "Link", "Para", "Table", "render_html", "render_markdown"]


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str
    kind: str = ""  # "" | "banner" (random weights) | "note" (what a section cannot show)


@dataclass(frozen=True)
class Link:
    text: str
    href: str


Cell = str | Link


@dataclass(frozen=True)
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[Cell]]


@dataclass(frozen=True)
class Image:
    file: str  # a file name beside index.html / report.md
    alt: str


Block = Heading | Para | Table | Image

_CSS = """
body { font-family: sans-serif; max-width: 1100px; margin: 1.5em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; }
th { background: #f2f2f2; }
.banner { background: #c00; color: white; font-weight: bold; padding: 0.6em; }
.note { color: #555; font-style: italic; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.4em 0; }
"""


def _html_cell(cell: Cell) -> str:
    if isinstance(cell, Link):
        return f'<a href="{html.escape(cell.href)}">{html.escape(cell.text)}</a>'
    return html.escape(str(cell))


def render_html(title: str, blocks: Sequence[Block]) -> str:
    """A complete HTML page: inline CSS, images by relative file name, nothing fetched from a network."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"]
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            cls = f' class="{block.kind}"' if block.kind else ""
            out.append(f"<p{cls}>{html.escape(block.text)}</p>")
        elif isinstance(block, Table):
            out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in block.headers) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in row) + "</tr>" for row in block.rows]
            out.append("</table>")
        elif isinstance(block, Image):
            out.append(f'<img src="{html.escape(block.file)}" alt="{html.escape(block.alt)}">')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _md_cell(cell: Cell) -> str:
    text = f"[{cell.text}]({cell.href})" if isinstance(cell, Link) else str(cell)
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block]) -> str:
    """The same blocks as GitHub-flavoured Markdown (tables, images by relative file name)."""
    out = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append("#" * block.level + " " + block.text)
        elif isinstance(block, Para):
            out.append(f"**{block.text}**" if block.kind == "banner" else
                       f"_{block.text}_" if block.kind == "note" else block.text)
        elif isinstance(block, Table):
            out.append("| " + " | ".join(block.headers) + " |\n|" + "---|" * len(block.headers))
            out[-1] += "".join("\n| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows)
        elif isinstance(block, Image):
            out.append(f"![{block.alt}]({block.file})")
    return "\n\n".join(out) + "\n"
