"""Rendering tables, figures and the headline as Markdown.

The summary sits next to its figures, so it links them by bare file name.
Markdown renderers pass raw HTML through, so text is HTML-escaped here too.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence
from urllib.parse import quote

from pipeline.reporting.captions import caption
from pipeline.reporting.headline import Headline
from pipeline.reporting.tables import Table

__all__ = ["md_escape", "md_figure", "md_headline", "md_table"]


def md_escape(text: str) -> str:
    """``text`` safe inside Markdown and a table cell, on one line."""
    # "<script>" must not pass through as HTML; "|" would split a table cell
    # and "*"/"`" would start markup.
    text = html.escape(str(text), quote=False).replace("\n", " ")
    for ch in ("\\", "|", "*", "`"):
        text = text.replace(ch, "\\" + ch)
    return text


def md_table(table: Table) -> str:
    """``table`` as a pipe table; best cells and the footer in bold."""
    if not table.rows and table.footer is None:
        return "_(no rows)_"

    def line(row: Sequence[str], r: int | None) -> str:
        parts = []
        for c, text in enumerate(row):
            text = md_escape(text)
            if (r is None or (r, c) in table.best) and text:
                text = f"**{text}**"
            parts.append(text)
        return "| " + " | ".join(parts) + " |"

    sep = "| " + " | ".join("---:" if c in table.numeric else "---"
                            for c in range(len(table.header))) + " |"
    lines = ["| " + " | ".join(md_escape(h) for h in table.header) + " |", sep]
    lines += [line(row, r) for r, row in enumerate(table.rows)]
    if table.footer:
        lines.append(line(table.footer, None))
    return "\n".join(lines)


def md_figure(key: str, path: Path, k: int) -> str:
    """An image link to ``path``'s file name and its caption in italics."""
    return f"![{md_escape(key)}]({quote(Path(path).name)})\n\n_{md_escape(caption(key, k))}_"


def md_headline(h: Headline) -> str:
    """The headline sentences as one bold paragraph."""
    return "**" + " ".join(md_escape(t) for t, _ in h.sentences) + "**"
