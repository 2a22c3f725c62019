"""A tiny document model rendered twice: to Markdown and to self-contained HTML.

Building the report once as sections of paragraphs, tables and images keeps
report.md and report.html saying the same thing. Extra sections (for example the
mapping stage's unmapped codes) plug in as ``Section`` objects.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, caption: str = "") -> Table:
        """Any DataFrame as a table of text cells (missing values as empty cells)."""
        rows = [["" if pd.isna(v) else str(v) for v in row]
                for row in frame.itertuples(index=False, name=None)]
        return cls([str(c) for c in frame.columns], rows, caption)


@dataclass
class Image:
    """A figure: ``filename`` is a PNG in the report folder; an SVG of the same name
    beside it (as ``figure.save_figure`` writes) is what report.html embeds."""

    filename: str
    caption: str

    def svg(self, folder: Path) -> Path | None:
        path = (folder / self.filename).with_suffix(".svg")
        return path if path.exists() else None


Block = str | Table | Image


@dataclass
class Section:
    """A titled part of the report; text blocks whose lines all start with "- " are lists."""

    title: str
    blocks: list[Block] = field(default_factory=list)

    @classmethod
    def from_frame(cls, title: str, frame: pd.DataFrame, text: str = "") -> Section:
        return cls(title, ([text] if text else []) + [Table.from_frame(frame)])


def _is_list(text: str) -> bool:
    lines = text.strip().splitlines()
    return bool(lines) and all(line.startswith("- ") for line in lines)


# ------------------------------------------------------------------- markdown


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> str:
    out = [f"| {' | '.join(_md_cell(h) for h in table.header)} |",
           f"|{'|'.join('---' for _ in table.header)}|"]
    out += [f"| {' | '.join(_md_cell(c) for c in row)} |" for row in table.rows]
    if table.caption:
        out.append(f"\n*{table.caption}*")
    return "\n".join(out)


def to_markdown(title: str, sections: list[Section], folder: Path | None = None) -> str:
    parts = [f"# {title}"]
    for section in sections:
        parts.append(f"## {section.title}")
        for block in section.blocks:
            if isinstance(block, Table):
                parts.append(_md_table(block))
            elif isinstance(block, Image):
                vector = block.svg(folder) if folder is not None else None
                link = f" ([SVG]({vector.name}))" if vector else ""
                parts.append(f"![{block.caption}]({block.filename})\n\n*{block.caption}*{link}")
            else:
                parts.append(block.strip())
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------- html

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #444}h2{font-size:1.25em;margin-top:2em;
border-bottom:1px solid #ccc}table{border-collapse:collapse;margin:1em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f2f2f2}tr:nth-child(even) td{background:#fafafa}
figure{margin:1.5em 0}figure img{width:100%;max-width:960px;height:auto;
border:1px solid #ddd}
figcaption,.caption{font-size:.9em;color:#555;font-style:italic}
"""


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in table.rows)
    caption = f'<p class="caption">{html.escape(table.caption)}</p>' if table.caption else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{caption}"


def _html_image(image: Image, folder: Path) -> str:
    """The figure inlined (the SVG when there is one, else the PNG) with its caption."""
    vector = image.svg(folder)
    source, kind = (vector, "svg+xml") if vector else (folder / image.filename, "png")
    data = base64.b64encode(source.read_bytes()).decode("ascii")
    alt = html.escape(image.caption)
    return (f'<figure><img src="data:image/{kind};base64,{data}" alt="{alt}">'
            f"<figcaption>{alt}</figcaption></figure>")


def _html_text(text: str) -> str:
    if _is_list(text):
        items = "".join(f"<li>{html.escape(line[2:])}</li>"
                        for line in text.strip().splitlines())
        return f"<ul>{items}</ul>"
    return f"<p>{html.escape(text.strip())}</p>"


def to_html(title: str, sections: list[Section], folder: Path) -> str:
    """One HTML file with the PNGs from ``folder`` inlined, so it can be mailed alone."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, Table):
                parts.append(_html_table(block))
            elif isinstance(block, Image):
                parts.append(_html_image(block, folder))
            else:
                parts.append(_html_text(block))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
