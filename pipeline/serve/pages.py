"""The search page's HTML. Every string that comes from data (experiment and class
names, file names, paths, error messages) is escaped here; URLs are built from
integers (epochs, image ids) only."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from pipeline.search.searcher import Hit


@dataclass(frozen=True)
class Frame:
    """What every page's header shows: the experiment, the epoch on view and the epochs to switch to."""

    experiment: str
    epoch: int | None
    epochs: Sequence[int]
    path: str = "/"  # the view the epoch switch reloads ("/" or "/queries")


def page(frame: Frame, title: str, body: str) -> str:
    """A complete document: header (views, epoch switch), then ``body``."""
    here = {"/": "", "/queries": ""}
    if frame.path in here:
        here[frame.path] = ' class="here"'
    e = f"?epoch={frame.epoch}" if frame.epoch is not None else ""
    options = "".join(f'<option value="{n}"{" selected" if n == frame.epoch else ""}>epoch {n}</option>'
                      for n in frame.epochs)
    switch = (f'<form method="get" action="{escape(frame.path)}" id="epoch-switch">'
              f'<label>epoch <select name="epoch" id="epoch">{options}</select></label> '
              f'<button type="submit">switch</button></form>') if frame.epochs else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)} - {escape(frame.experiment)}</title>\n"
        '<link rel="icon" href="data:,">\n<link rel="stylesheet" href="/static/serve.css">\n</head>\n<body>\n'
        f'<header><span class="title">similar images: {escape(frame.experiment)}</span>'
        f'<a href="/{e}"{here["/"]}>search</a><a href="/queries{e}"{here["/queries"]}>worst validation queries</a>'
        f"{switch}</header>\n<main>\n<h1>{escape(title)}</h1>\n{body}\n</main>\n"
        '<script src="/static/serve.js"></script>\n</body>\n</html>\n')


def upload_form(epoch: int, max_mb: float) -> str:
    """The upload form: a file input inside a drop area (the script submits on choice or drop)."""
    return (
        f'<form id="upload" method="post" action="/search?epoch={epoch}" enctype="multipart/form-data">'
        '<div id="drop" class="drop"><p>Drop an image here, or choose one:</p>'
        '<input type="file" name="image" id="image" accept="image/*" required> '
        '<button type="submit" id="search-button">search</button>'
        f'<p class="muted">JPEG, PNG, GIF, BMP, WebP or TIFF, grayscale or colour, any size, up to {max_mb:g} MB'
        "</p></div></form>")


def upload_page(frame: Frame, *, count: int, splits: Sequence[str], k: int, max_mb: float) -> str:
    """The start page: what is searched, and the upload form."""
    assert frame.epoch is not None
    body = (f'<p>Find the {k} images nearest to yours among the {count} {escape("+".join(splits))} images '
            f"embedded by epoch {frame.epoch}'s network.</p>\n{upload_form(frame.epoch, max_mb)}")
    return page(frame, f"Search epoch {frame.epoch}", body)


def _thumb(epoch: int, image_id: int, alt: str, css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f'<img src="/thumb/{epoch}/{image_id}.png" alt="{escape(alt)}"{cls} loading="lazy">'


def hit_list(epoch: int, hits: Sequence[Hit], *, label: int | None = None) -> str:
    """Thumbnails of ``hits``, nearest first, each with its class, distance and id; with
    ``label`` given, each is marked right or wrong by whether its label matches."""
    items = []
    for rank, h in enumerate(hits, 1):
        mark = "" if label is None else (' class="right"' if h.label == label else ' class="wrong"')
        tip = f' title="{escape(h.path)}"' if h.path else ""
        items.append(
            f'<li{mark} data-image-id="{h.image_id}" data-class="{escape(h.class_name)}"{tip}>'
            f'<a href="/image/{h.image_id}?epoch={epoch}">{_thumb(epoch, h.image_id, f"#{rank} {h.class_name}")}</a>'
            f'<span class="cls">{escape(h.class_name)}</span>'
            f'<span class="dist">d = {h.distance:.3f}</span> <span class="id muted">#{h.image_id}</span></li>')
    return f'<ol class="thumbs" id="results">{"".join(items)}</ol>'


def majority(hits: Sequence[Hit]) -> str:
    """A sentence naming the most frequent class among ``hits``."""
    if not hits:
        return "No neighbours found."
    counts = pd.Series([h.class_name for h in hits]).value_counts()
    return f"{counts.iloc[0]} of the {len(hits)} nearest are {escape(str(counts.index[0]))}."


def results_page(frame: Frame, *, filename: str, preview: bytes | None, seen: bytes, hits: Sequence[Hit],
                 max_mb: float) -> str:
    """The neighbours of an uploaded image, with the upload and the pixels the network saw."""
    assert frame.epoch is not None
    shown = (f'<img src="data:image/png;base64,{base64.b64encode(preview).decode("ascii")}" '
             'alt="the uploaded image" id="query-preview">') if preview else ""
    query = (f'<div class="query">{shown}<img class="net" src="data:image/png;base64,'
             f'{base64.b64encode(seen).decode("ascii")}" alt="the upload as the network sees it">'
             f'<div><p><strong id="query-name">{escape(filename)}</strong></p>'
             f'<p id="majority">{majority(hits)}</p><p class="muted">Left: your image; right: what the network sees.'
             "</p></div></div>")
    body = f"{query}\n{hit_list(frame.epoch, hits)}\n<h2>Another image</h2>\n{upload_form(frame.epoch, max_mb)}"
    return page(frame, f"Nearest images at epoch {frame.epoch}", body)


def image_page(frame: Frame, *, image: Mapping[str, Any], hits: Sequence[Hit]) -> str:
    """The neighbours of an image of the dataset (indexed or not)."""
    assert frame.epoch is not None
    iid = int(image["image_id"])
    path = f'<p class="muted">{escape(str(image["path"]))}</p>' if image.get("path") else ""
    query = (f'<div class="query">{_thumb(frame.epoch, iid, "query", "net")}'
             f'<div><p><strong>#{iid}</strong>, {escape(str(image["split"]))} image of class '
             f'<strong>{escape(str(image["class_name"]))}</strong></p>{path}<p>{majority(hits)}</p></div></div>')
    body = f"{query}\n{hit_list(frame.epoch, hits, label=int(image['label']))}"
    return page(frame, f"Neighbours of image #{iid} at epoch {frame.epoch}", body)


def queries_page(frame: Frame, rows: pd.DataFrame, describe: Callable[[int], Mapping[str, Any]], *, k: int | None, total: int, offset: int,
                 limit: int, mean: float) -> str:
    """One page of validation queries, worst precision first, each with its nearest training images.

    ``rows`` has ``image_id``, ``label``, ``precision`` and ``neighbors``;
    ``describe(image_id)`` gives an image's ``class_name`` and ``label``.
    """
    assert frame.epoch is not None
    at_k = f"precision@{k}" if k else "precision@k"
    blocks = []
    for r in rows.itertuples(index=False):
        qid, label = int(r.image_id), int(r.label)
        q = describe(qid)
        neighbours = []
        for rank, nid in enumerate(r.neighbors, 1):
            n = describe(int(nid))
            alt = f"#{rank} {n['class_name']}"
            mark = "right" if int(n["label"]) == label else "wrong"
            neighbours.append(
                f'<li class="{mark}" data-image-id="{int(nid)}"><a href="/image/{int(nid)}?epoch={frame.epoch}">'
                f'{_thumb(frame.epoch, int(nid), alt)}</a>'
                f'<span class="cls">{escape(str(n["class_name"]))}</span></li>')
        blocks.append(
            f'<div class="row" data-image-id="{qid}" data-precision="{float(r.precision):.6f}"><div class="who">'
            f'<a href="/image/{qid}?epoch={frame.epoch}">{_thumb(frame.epoch, qid, "query")}</a>'
            f'<strong>{escape(str(q["class_name"]))}</strong><br>#{qid}<br>'
            f'<span class="precision">{at_k} = {float(r.precision):.2f}</span></div>'
            f'<ol class="thumbs">{"".join(neighbours)}</ol></div>')
    nav = []
    if offset > 0:
        nav.append(f'<a href="/queries?epoch={frame.epoch}&amp;offset={max(offset - limit, 0)}">previous</a>')
    if offset + limit < total:
        nav.append(f'<a href="/queries?epoch={frame.epoch}&amp;offset={offset + limit}" id="next">next</a>')
    head = (f"<p>{total} validation queries, mean {at_k} {mean:.3f}. Showing {offset + 1}-"
            f"{min(offset + limit, total)}, lowest precision first; each query's nearest training images are "
            'framed green when they share its class and red when not.</p>')
    pager = f'<p class="pager">{"".join(nav)}</p>'
    body = f'{head}\n{pager}\n<div class="queries" id="queries">{"".join(blocks)}</div>\n{pager}'
    return page(frame, f"Validation queries, worst first: epoch {frame.epoch}", body)


def no_queries_page(frame: Frame, missing: str, command: str) -> str:
    """Said when the per-query validation file of the epoch does not exist."""
    body = (f'<p class="notice" id="no-queries">This epoch has no per-query validation results: '
            f"<code>{escape(missing)}</code> does not exist. Create it by rerunning validation of this epoch:"
            f"<br><code>{escape(command)}</code><br>(ValidateEpoch reruns by itself when one of its files is "
            "missing.) Then reload this page.</p>")
    return page(frame, f"Validation queries: epoch {frame.epoch}", body)


def error_page(frame: Frame, status: int, reason: str, message: str) -> str:
    """A readable page for a refused request."""
    back = f"/?epoch={frame.epoch}" if frame.epoch is not None else "/"
    body = (f'<p class="error" id="error">{escape(message)}</p>'
            f'<p><a href="{back}">back to the search page</a></p>')
    return page(frame, f"{status} {reason}", body)
