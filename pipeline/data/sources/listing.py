"""The common shape every on-disk dataset source returns.

A source (Tiny ImageNet, an ImageFolder tree, ...) only *lists* images; it does
not decode them. Listing and decoding are separate so the listing can be cached
and diffed cheaply, and decoding can run in parallel workers later.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

RECORD_COLUMNS: tuple[str, ...] = ("split", "class_id", "path")
CLASS_COLUMNS: tuple[str, ...] = ("label", "class_id", "class_name")
SPLITS: tuple[str, ...] = ("train", "val")


@dataclass(frozen=True)
class SourceListing:
    """Every labelled image of a dataset, plus its class table.

    ``records`` has one row per image with columns ``split`` (``'train'`` or
    ``'val'``), ``class_id`` (wnid or folder name) and ``path`` (POSIX path
    relative to ``root``), sorted by ``(split, class_id, path)``.

    ``classes`` has one row per class with columns ``label`` (int64, dense
    ``0..C-1`` in sorted ``class_id`` order), ``class_id`` and ``class_name``.
    """

    root: Path
    records: pd.DataFrame
    classes: pd.DataFrame


def make_classes(
    class_ids: Iterable[str], names: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """Build the class table: dense labels in sorted ``class_id`` order.

    ``names`` maps class ids to human-readable names; an id it lacks (or
    ``names=None``) is named after itself. Duplicate ids collapse to one class.
    """
    # Python's code-point order, not a locale collation, so labels are the same
    # on every machine and OS.
    ids = sorted({str(c) for c in class_ids})
    names = names or {}
    return pd.DataFrame(
        {
            "label": pd.Series(range(len(ids)), dtype="int64"),
            "class_id": pd.Series(ids, dtype="str"),
            "class_name": pd.Series([names.get(c) or c for c in ids], dtype="str"),
        }
    )


def make_records(rows: Iterable[tuple[str, str, str]]) -> pd.DataFrame:
    """Build the image table from ``(split, class_id, path)`` tuples.

    Rows are sorted here (code-point order on the POSIX path strings) so image
    ids derived from row positions are stable across runs and file systems,
    whatever order the directory listing came back in.
    """
    ordered = sorted(rows)
    return pd.DataFrame(
        {
            column: pd.Series([row[i] for row in ordered], dtype="str")
            for i, column in enumerate(RECORD_COLUMNS)
        }
    )


def is_hidden(name: str) -> bool:
    """True for dot-files and dot-folders (``.DS_Store``, ``.ipynb_checkpoints``)."""
    return name.startswith(".")
