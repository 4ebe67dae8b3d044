"""What a dataset source is, the registry that names them, and the shapes they return.

A source is registered under the name ``[dataset] source`` gives it, by its own
module (``SOURCES.add(name, ...)``; the package imports every source module), as
one of two kinds:

* :class:`FileSource` (Tiny ImageNet, an ImageFolder tree) only *lists* image
  files (:class:`SourceListing`); indexing decodes them, in parallel. Listing and
  decoding are separate so the listing can be cached and diffed cheaply, and
  decoding can run in parallel workers later.
* :class:`ArraySource` (Fashion-MNIST) loads ready pixel arrays
  (:class:`ArraySplit` per split): nothing to decode.

Each says its native image size and how it uses ``[dataset] root``
(:data:`RootUse`), which :class:`~pipeline.data.settings.IndexSettings` checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Literal, Mapping, Union

import numpy as np

from pipeline.settings import Registry

if TYPE_CHECKING:
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
    import pandas as pd  # here, not at import: the registry is read while Luigi declares tasks

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
    import pandas as pd

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


@dataclass(frozen=True)
class ArraySplit:
    """Images (N, H, W) uint8 grayscale and labels (N,) int64 of one split."""

    images: np.ndarray
    labels: np.ndarray


#: How a source uses ``[dataset] root``: ``required`` (the dataset folder, no default),
#: ``optional`` (else ``default_root``), or ``unused`` (it always reads ``default_root``,
#: so a root would be silently ignored and is refused).
RootUse = Literal["required", "optional", "unused"]


@dataclass(frozen=True, kw_only=True)
class FileSource:
    """Image files listed by ``list_images(root)`` and decoded by indexing."""

    name: str
    native_size: int
    list_images: Callable[[Path], SourceListing]
    root_use: RootUse = "required"
    default_root: Path | None = None

    @property
    def decodes_files(self) -> bool:
        return True


@dataclass(frozen=True, kw_only=True)
class ArraySource:
    """Pixel arrays loaded by ``load(root)``, one :class:`ArraySplit` per split, labels indexing ``class_names``."""

    name: str
    native_size: int
    load: Callable[[Path], dict[str, ArraySplit]]
    class_names: tuple[str, ...]
    root_use: RootUse = "optional"
    default_root: Path | None = None

    @property
    def decodes_files(self) -> bool:
        return False


Source = Union[FileSource, ArraySource]

SOURCES: Registry[Source] = Registry("dataset source", "[dataset] source")


def register_source(source: Source) -> Source:
    """Register ``source`` under its name (a source module calls this once per source it defines)."""
    if source.root_use != "required" and source.default_root is None:
        raise ValueError(f"source {source.name!r} reads default_root without a root, but has none")
    return SOURCES.add(source.name, source)
