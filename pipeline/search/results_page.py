"""A self-contained HTML page of search results: each query's image beside its
nearest neighbours, as thumbnails embedded as ``data:`` URIs (the page needs no
other file, so it can be mailed or moved)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.storage import write_text_atomic

if TYPE_CHECKING:  # the searcher imports torch; this module is imported before the command needs it
    from pipeline.search.searcher import Hit, Searcher

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.05em; margin: 1.6em 0 0.5em; }
.row { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-start; }
figure { margin: 0; width: 110px; font-size: 0.78em; text-align: center; }
figure img { width: 96px; height: 96px; image-rendering: pixelated; border: 3px solid #ccc; }
figure.query img { border-color: #333; }
figure.same img { border-color: #2a9d4b; } figure.other img { border-color: #d1495b; }
figcaption { overflow-wrap: anywhere; }
.meta { color: #666; font-size: 0.9em; }
"""


@dataclass(frozen=True)
class QueryResult:
    """One query: its name, its image as the network sees it (PNG), its hits, and, when
    the query is a dataset image, its id and class label (hits of that class are marked)."""

    name: str
    png: bytes
    hits: list[Hit]
    image_id: int | None = None
    label: int | None = None


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(png: bytes, caption: str, css: str, title: str = "") -> str:
    tip = f' title="{html.escape(title)}"' if title else ""
    return (f'<figure class="{css}"{tip}><img src="{data_uri(png)}" alt="{html.escape(caption)}">'
            f"<figcaption>{caption}</figcaption></figure>")


def render_results(searcher: Searcher, queries: list[QueryResult]) -> str:
    """The page's HTML: one section per query, its hits nearest first."""
    esc = html.escape
    sections = []
    for q in queries:
        figures = [_figure(q.png, f"<b>query</b><br>{esc(Path(q.name).name or q.name)}", "query", q.name)]
        for rank, hit in enumerate(q.hits, 1):
            css = "" if q.label is None else ("same" if hit.label == q.label else "other")
            source = searcher.source_path(hit)
            caption = (f"#{rank} id {hit.image_id}<br>{esc(hit.class_name)}<br>d = {hit.distance:.3f}")
            figures.append(_figure(searcher.thumbnail_png(hit.image_id), caption, css,
                                   str(source) if source else f"{hit.split} image {hit.image_id}"))
        sections.append(f"<h2>{esc(q.name)}</h2>\n<div class=\"row\">{''.join(figures)}</div>")
    splits = "+".join(searcher.meta["splits"])
    title = f"Similar images: {searcher.experiment}, epoch {searcher.epoch}"
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n<h1>{esc(title)}</h1>\n"
            f"<p class=\"meta\">{searcher.count} indexed {esc(splits)} images of {esc(str(searcher.dataset_dir))}; "
            f"distances are Euclidean between embeddings; green/red borders: same/other class as the query "
            f"(where the query's class is known).</p>\n" + "\n".join(sections) + "\n</body></html>\n")


def write_results_page(path: str | Path, searcher: Searcher, queries: list[QueryResult]) -> None:
    """Write :func:`render_results` to ``path`` atomically."""
    write_text_atomic(path, render_results(searcher, queries))
