"""List a torchvision ``ImageFolder``-style tree: ``root/<split>/<class>/<image>``.

Images may sit in nested subfolders of a class folder. The classes are the
folders of the ``train`` split; every other split must use a subset of them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from pipeline.data.sources.base import (
    SPLITS,
    FileSource,
    SourceListing,
    is_hidden,
    make_classes,
    make_records,
    register_source,
)
from pipeline.errors import DatasetLayoutError

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})

_LAYOUT = "expected root/<split>/<class name>/<image>.jpg|.jpeg|.png|.bmp|.webp"


def list_image_folder(root: str | os.PathLike, splits: Sequence[str] = SPLITS) -> SourceListing:
    """List the images of ``splits`` (which must include ``'train'``) under ``root``.

    ``class_id`` and ``class_name`` are the class folder's name. Hidden files
    and folders are skipped. Raises :class:`DatasetLayoutError` naming the
    offending path for a missing root or split folder, a class folder without
    images, or a non-train class that ``train`` does not have.
    """
    splits = tuple(splits)
    if "train" not in splits or not set(splits) <= set(SPLITS) or len(set(splits)) != len(splits):
        # A caller bug, not a data problem: the class set is defined by train.
        raise ValueError(f"splits must be distinct values from {SPLITS} and include 'train', got {splits}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"image folder root {root} does not exist or is not a folder; {_LAYOUT}")

    per_split = {split: _list_split(root, split) for split in splits}
    train_classes = set(per_split["train"])
    for split, by_class in per_split.items():
        unknown = sorted(set(by_class) - train_classes)
        if unknown:
            folders = ", ".join(str(root / split / c) for c in unknown)
            raise DatasetLayoutError(
                f"class folder(s) {folders} have no counterpart in {root / 'train'}; "
                f"every {split} class must also be a train class (add train images or remove the folder)"
            )
    rows = [
        (split, class_id, path)
        for split, by_class in per_split.items()
        for class_id, paths in by_class.items()
        for path in paths
    ]
    return SourceListing(root=root, records=make_records(rows), classes=make_classes(train_classes))


def _list_split(root: Path, split: str) -> dict[str, list[str]]:
    """Class name -> image paths (relative to ``root``) for one split folder."""
    split_dir = root / split
    if not split_dir.is_dir():
        raise DatasetLayoutError(f"missing split folder {split_dir}; {_LAYOUT}")
    with os.scandir(split_dir) as entries:
        class_dirs = sorted(e.name for e in entries if not is_hidden(e.name) and e.is_dir())
    if not class_dirs:
        raise DatasetLayoutError(f"split folder {split_dir} has no class folders; {_LAYOUT}")
    by_class: dict[str, list[str]] = {}
    for class_id in class_dirs:
        paths = _images_under(root, split_dir / class_id)
        if not paths:
            raise DatasetLayoutError(
                f"class folder {split_dir / class_id} holds no images; "
                f"expected .jpg/.jpeg/.png/.bmp/.webp files in it (or remove the folder)"
            )
        by_class[class_id] = paths
    return by_class


def _images_under(root: Path, folder: Path) -> list[str]:
    """Image files anywhere below ``folder``, as POSIX paths relative to ``root``."""
    found: list[str] = []
    seen_dirs: set[str] = set()
    # Follow symlinks like torchvision does (class folders are often links to
    # shared storage) but remember real paths so a link cycle cannot loop forever.
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = [d for d in dirnames if not is_hidden(d)]
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        found.extend(
            f"{rel_dir}/{name}"
            for name in filenames
            if not is_hidden(name) and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES
        )
    return found


register_source(FileSource(name="image-folder", native_size=64, list_images=list_image_folder))
