"""A report as a list of simple blocks, rendered to one self-contained HTML page or markdown.

The same blocks give both files, so the HTML page and its markdown twin always say the same
thing: the HTML embeds every image as a base64 PNG (inline CSS, no external assets), the
markdown links PNG files written next to it.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Union


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Preformatted:
    text: str


@dataclass
class Image:
    """A PNG; ``name`` is its file name in the markdown twin's image folder."""

    name: str
    png: bytes
    caption: str


Block = Union[Heading, Paragraph, Table, Preformatted, Image]

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; color: #222; line-height: 1.4; padding: 0 1em; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #aaa; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f0f0; }
pre { background: #f6f6f6; border: 1px solid #ddd; padding: .8em; overflow-x: auto; font-size: 13px; }
figure { display: inline-block; margin: .5em; vertical-align: top; text-align: center; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 13px; color: #555; }
"""


def render_html(title: str, blocks: list[Block]) -> str:
    """One self-contained HTML page (images as ``data:image/png;base64`` URIs)."""
    body = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, Preformatted):
            body.append(f"<pre>{html.escape(block.text)}</pre>")
        elif isinstance(block, Image):
            data = base64.b64encode(block.png).decode("ascii")
            caption = html.escape(block.caption)
            body.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
        else:
            raise TypeError(f"unknown report block {block!r}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def render_markdown(title: str, blocks: list[Block], files_dir: Path) -> str:
    """Markdown twin; writes each image into ``files_dir`` and links it relative to its parent."""
    lines = [f"# {title}", ""]
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(_cell(h) for h in block.header) + " |")
            lines.append("|" + "|".join(["---"] + ["---:"] * (len(block.header) - 1)) + "|")
            lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in block.rows]
            lines.append("")
        elif isinstance(block, Preformatted):
            lines += ["```", block.text.rstrip("\n"), "```", ""]
        elif isinstance(block, Image):
            files_dir.mkdir(parents=True, exist_ok=True)
            (files_dir / block.name).write_bytes(block.png)
            lines += [f"![{block.caption}]({files_dir.name}/{block.name})", "", f"*{block.caption}*", ""]
        else:
            raise TypeError(f"unknown report block {block!r}")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
