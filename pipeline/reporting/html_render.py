"""Rendering tables, figures and the headline as one self-contained HTML page.

The page needs nothing beside itself (figures as base64 data URIs, the CSS of
``style.css`` inline) so it can be mailed or archived as one file. Every string
that reaches the page is escaped: experiment names, class names and config
values come from users and must not become markup.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Sequence

from pipeline.reporting.captions import caption
from pipeline.reporting.headline import Headline
from pipeline.reporting.tables import Table

__all__ = ["data_uri", "html_figure", "html_headline", "html_page", "html_table"]

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
         ".gif": "image/gif", ".svg": "image/svg+xml"}


def _css() -> str:
    return Path(__file__).with_name("style.css").read_text(encoding="utf-8")


def html_table(table: Table) -> str:
    """``table`` as an HTML table (numeric cells right-aligned, best cells highlighted)."""
    if not table.rows and table.footer is None:
        return '<p class="muted">(no rows)</p>'

    def cells(row: Sequence[str], r: int | None) -> str:
        out = []
        for c, text in enumerate(row):
            cls = []
            if c in table.numeric:
                cls.append("num")
            if r is not None and (r, c) in table.best:
                cls.append("best")
            attr = f' class="{" ".join(cls)}"' if cls else ""
            out.append(f"<td{attr}>{html.escape(text)}</td>")
        return "".join(out)

    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "\n".join(f"<tr>{cells(row, r)}</tr>" for r, row in enumerate(table.rows))
    foot = f"<tfoot><tr>{cells(table.footer, None)}</tr></tfoot>" if table.footer else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody>{foot}</table>"


def data_uri(path: Path) -> str:
    """The file at ``path`` as a base64 ``data:`` URI, typed by its suffix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"figure file {path} does not exist")
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def html_figure(key: str, path: Path, k: int) -> str:
    """Figure ``key`` embedded from ``path``, with its caption (see :mod:`.captions`)."""
    return (f'<figure><img src="{data_uri(path)}" alt="{html.escape(key)}">'
            f"<figcaption>{html.escape(caption(key, k))}</figcaption></figure>")


def html_headline(h: Headline) -> str:
    """The headline paragraph, each sentence styled by its class."""
    spans = " ".join(f'<span class="{c}">{html.escape(t)}</span>' if c else html.escape(t)
                     for t, c in h.sentences)
    return f'<p class="headline">{spans}</p>'


def html_page(title: str, body: list[str]) -> str:
    """A complete HTML document titled ``title`` around the ``body`` blocks."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>\n{_css()}</style>\n</head>\n<body>\n"
        + "\n".join(body) + "\n</body>\n</html>\n"
    )
