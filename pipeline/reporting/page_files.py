"""Writing a report folder: the figures beside the pages, then ``index.html``
and ``summary.md``, each file written atomically."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Mapping

from pipeline.atomic import atomic_path, write_text_atomic

__all__ = ["HTML_NAME", "MARKDOWN_NAME", "place_figures", "write_pages"]

from pipeline.paths import REPORT_HTML as HTML_NAME  # noqa: E402  (names live in pipeline.paths)
from pipeline.paths import REPORT_MARKDOWN as MARKDOWN_NAME  # noqa: E402


def place_figures(out_dir: Path, figures: Mapping[str, Path]) -> dict[str, Path]:
    """Copy figures that live elsewhere into ``out_dir`` so Markdown links resolve.

    Returns each key's path inside ``out_dir``; a file name already taken gets
    its key as a prefix. Raises ``FileNotFoundError`` for a missing figure.
    """
    placed: dict[str, Path] = {}
    used: set[str] = set()
    for key, src in figures.items():
        src = Path(src)
        if not src.is_file():
            raise FileNotFoundError(f"figure {key!r}: file {src} does not exist")
        if src.resolve().parent == out_dir.resolve():
            dest = src
        else:
            name = src.name if src.name not in used else f"{key}-{src.name}"
            dest = out_dir / name
            with atomic_path(dest) as tmp:
                shutil.copyfile(src, tmp)
        used.add(dest.name)
        placed[key] = dest
    return placed


def write_pages(out_dir: Path, page: str, summary: str) -> dict[str, Path]:
    """Write ``page`` as ``index.html`` and ``summary`` as ``summary.md`` into ``out_dir``.

    Returns ``{"html": ..., "markdown": ...}``.
    """
    paths = {"html": out_dir / HTML_NAME, "markdown": out_dir / MARKDOWN_NAME}
    write_text_atomic(paths["html"], page)
    write_text_atomic(paths["markdown"], summary)
    return paths
