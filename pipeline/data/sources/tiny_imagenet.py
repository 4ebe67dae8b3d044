"""List the standard ``tiny-imagenet-200`` download.

Expected layout under ``root``::

    wnids.txt                       one wnid per line: the classes
    words.txt                       optional: wnid<TAB>comma-separated names
    train/<wnid>/images/*.JPEG      training images of each class
    train/<wnid>/<wnid>_boxes.txt   ignored
    val/images/*.JPEG               validation images ...
    val/val_annotations.txt         ... labelled here: file<TAB>wnid<TAB>x0 y0 x1 y1
    test/                           ignored (unlabelled)
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from pipeline.data.sources.base import (
    FileSource,
    SourceListing,
    is_hidden,
    make_classes,
    make_records,
    register_source,
)
from pipeline.errors import DatasetLayoutError

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpeg", ".jpg", ".png"})

_LAYOUT = (
    "expected the tiny-imagenet-200 layout: wnids.txt, words.txt, "
    "train/<wnid>/images/*.JPEG and val/images/*.JPEG labelled by val/val_annotations.txt"
)


def list_tiny_imagenet(root: str | os.PathLike) -> SourceListing:
    """List the labelled train and val images of a Tiny ImageNet folder.

    Classes are the wnids in ``wnids.txt``; ``class_name`` is the first name
    ``words.txt`` gives for the wnid (the wnid itself if ``words.txt`` or its
    entry is missing). Raises :class:`DatasetLayoutError` naming the offending
    path when the layout is not the expected one.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"Tiny ImageNet root {root} does not exist or is not a folder; {_LAYOUT}")
    wnids = _read_wnids(root)
    names = _read_words(root / "words.txt", set(wnids))
    rows = _train_rows(root, wnids)
    rows += _val_rows(root, set(wnids))
    return SourceListing(root=root, records=make_records(rows), classes=make_classes(wnids, names))


def _read_wnids(root: Path) -> list[str]:
    path = root / "wnids.txt"
    if not path.is_file():
        hint = ""
        if (root / "tiny-imagenet-200" / "wnids.txt").is_file():
            hint = f" (did you mean {root / 'tiny-imagenet-200'}?)"
        raise DatasetLayoutError(f"missing {path}{hint}; {_LAYOUT}")
    wnids: list[str] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        wnid = line.strip()
        if wnid:
            wnids.append(_safe_wnid(wnid, f"{path} line {lineno}"))
    if not wnids:
        raise DatasetLayoutError(f"{path} lists no classes; expected one wnid (e.g. n01443537) per line")
    # Duplicates are harmless (the class set is what matters); keep first-seen order.
    return list(dict.fromkeys(wnids))


def _safe_wnid(wnid: str, where: str) -> str:
    """``wnid`` if it can serve as the single folder name ``train/<wnid>``.

    wnids.txt comes from outside, and each wnid becomes a path component; an
    entry such as ``../../etc`` or ``/abs`` would make us list (and later
    read) files outside the dataset root, so anything that is not one plain
    name is refused.
    """
    # Backslashes and drives count on every OS, so a Windows-made file is
    # judged the same everywhere.
    if "/" in wnid or "\\" in wnid:
        problem = "contains a path separator"
    elif wnid in (".", ".."):
        problem = "is a relative folder reference"
    elif PureWindowsPath(wnid).drive:
        problem = "starts with a drive"
    elif "\0" in wnid:
        problem = "contains a NUL character"
    else:
        return wnid
    raise DatasetLayoutError(
        f"{where} lists {wnid!r}, which {problem}; each line must hold one plain wnid such as n01443537, "
        f"the name of a folder directly under train/"
    )


def _read_words(path: Path, wanted: set[str]) -> dict[str, str]:
    """First human-readable name per wanted wnid; words.txt covers all of WordNet."""
    if not path.is_file():
        return {}
    names: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        wnid, sep, rest = line.partition("\t")
        wnid = wnid.strip()
        if sep and wnid in wanted:
            first = rest.split(",")[0].strip()
            if first:
                names[wnid] = first
    return names


def _is_image(name: str) -> bool:
    return not is_hidden(name) and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _train_rows(root: Path, wnids: list[str]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for wnid in wnids:
        folder = root / "train" / wnid / "images"
        if not folder.is_dir():
            raise DatasetLayoutError(
                f"missing training folder {folder} for class {wnid} listed in {root / 'wnids.txt'}; "
                f"expected train/<wnid>/images/*.JPEG for every wnid"
            )
        with os.scandir(folder) as entries:
            files = [e.name for e in entries if _is_image(e.name) and e.is_file()]
        if not files:
            raise DatasetLayoutError(
                f"training folder {folder} for class {wnid} holds no images; "
                f"expected at least one .JPEG/.jpg/.png file per class"
            )
        rows.extend(("train", wnid, f"train/{wnid}/images/{name}") for name in files)
    return rows


def _val_rows(root: Path, wnids: set[str]) -> list[tuple[str, str, str]]:
    ann_path = root / "val" / "val_annotations.txt"
    if not ann_path.is_file():
        raise DatasetLayoutError(
            f"missing {ann_path}; expected one line per validation image: "
            f"file name<TAB>wnid<TAB>four box coordinates, for images in val/images/"
        )
    images = root / "val" / "images"
    rows: list[tuple[str, str, str]] = []
    seen: dict[str, int] = {}
    lines = ann_path.read_text(encoding="utf-8").splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{ann_path} line {lineno}"
        fields = line.split("\t")
        if len(fields) < 2 or not fields[0].strip() or not fields[1].strip():
            raise DatasetLayoutError(
                f"{where} is malformed ({line!r}); expected file name<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1"
            )
        name, wnid = fields[0].strip(), fields[1].strip()
        rel = _safe_relative(name, where)
        if wnid not in wnids:
            raise DatasetLayoutError(
                f"{where} labels {name} with unknown class {wnid}; "
                f"every annotated wnid must be listed in {root / 'wnids.txt'}"
            )
        if rel in seen:
            raise DatasetLayoutError(
                f"{where} annotates {name} again (first on line {seen[rel]}); "
                f"expected each validation image exactly once"
            )
        seen[rel] = lineno
        if os.path.splitext(rel)[1].lower() not in IMAGE_SUFFIXES:
            raise DatasetLayoutError(
                f"{where} names {name}, which is not an image; "
                f"expected a .JPEG/.jpg/.png file in {images}"
            )
        if not (images / rel).is_file():
            raise DatasetLayoutError(
                f"{where} names {images / rel}, which does not exist; "
                f"expected every annotated image in {images}"
            )
        rows.append(("val", wnid, f"val/images/{rel}"))
    return rows


def _safe_relative(name: str, where: str) -> str:
    """``name`` as a POSIX path under val/images, rejecting absolute paths and ``..``.

    Annotation files come from outside; a crafted entry must not make us list
    (and later read) files outside the dataset root.
    """
    # Treat backslashes as separators too, so a Windows-made file is checked
    # the same way on every OS.
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or PureWindowsPath(name).drive or PureWindowsPath(name).is_absolute():
        raise DatasetLayoutError(
            f"{where} names the absolute path {name}; expected a file name relative to val/images"
        )
    if ".." in posix.parts:
        raise DatasetLayoutError(
            f"{where} names {name}, which leaves val/images with '..'; "
            f"expected a file name inside val/images"
        )
    return posix.as_posix()


register_source(FileSource(name="tiny-imagenet", native_size=64, list_images=list_tiny_imagenet))
