"""Dataset indexing: list a source, decode every image once in parallel, and
write the Parquet index plus the packed pixel store into one folder.

The caller passes a fresh (temporary) folder and renames it into place when
this returns, so a crash mid-indexing leaves nothing that looks complete.
Decoding runs on a dask.distributed cluster when the caller passes a client
(:mod:`pipeline.dask_cluster`): only (row, path) pairs and the small per-image
results travel; each partition writes its own rows of the memory-mapped store,
so a partition retried after a worker dies rewrites the same bytes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dask.bag as db
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from dask.diagnostics import ProgressBar

from pipeline.dask_cluster import compute
from pipeline.data.pixel_store import INDEX_FILE, STORE_FILE, create_store
from pipeline.data.sources import SOURCES, ArraySource, Source
from pipeline.data.sources.base import ArraySplit, SourceListing
from pipeline.data.sources.decode import decode_image
from pipeline.errors import BadImageError, ConfigError
from pipeline.inventory import recorded_dataset_settings
from pipeline.paths import DATASET_SUMMARY_FILE as SUMMARY_FILE
from pipeline.paths import SKIPPED_FILE, check_name, dataset_dir
from pipeline.settings import Problem, check, check_fields, option, refuse, setting, significant, unread

if TYPE_CHECKING:
    from distributed import Client

SECTION = "dataset"
SPLITS = ("train", "val")


@dataclass(frozen=True)
class IndexSettings:
    """``[dataset]``: what to index and how. ``stored_size`` 0 means the source's native size.

    Refused as silently ignored (:meth:`ignored`, checked while Luigi schedules, by
    :meth:`key`): a ``root`` with a source that never reads one (``embedded``), and
    ``on_bad_image = skip`` with a source that decodes no image files.
    """

    source: str = setting("embedded", "embedded (ships with the repo), fashion-mnist, tiny-imagenet or image-folder",
                          choices=SOURCES)
    root: str = setting("", "dataset folder (not for embedded)")
    name: str = setting("", "dataset folder name under artifacts/datasets/; default: the source")
    stored_size: int = setting(0, "stored image size in pixels; 0 = native")
    on_bad_image: str = setting("fail", "fail, or skip corrupt images and list them in skipped.parquet",
                                choices=("fail", "skip"))
    dask_scheduler: str = setting("threads", "dask scheduler for decoding", run_only=True)
    partition_size: int = option(256, minimum=1)

    def spec(self) -> Source:
        """The registered source ``source`` names."""
        return SOURCES[self.source]

    def decodes_files(self) -> bool:
        """Whether indexing decodes image files (in parallel, with dask); array sources do not."""
        return self.spec().decodes_files

    def resolved_size(self) -> int:
        return self.stored_size or self.spec().native_size

    def dataset_root(self) -> Path:
        """The folder the source reads: ``root``, else the source's own default."""
        spec = self.spec()
        if self.root and spec.root_use != "unused":
            return Path(self.root)
        if spec.default_root is None:
            raise ConfigError(f"[dataset] root = ''; source {self.source} needs the dataset folder: set root to it")
        return spec.default_root

    def key(self) -> str:
        """The dataset's folder name under ``<root>/datasets/``: ``<name or source>-<size>px``.

        Refuses an unknown source and ignored settings (:meth:`ignored`) at once, since
        a key built on them would name data the settings do not describe; the other
        settings are checked when indexing runs.
        """
        refuse(self, SECTION, self.ignored())
        return self._folder_name()

    def _folder_name(self) -> str:
        check_fields(self, SECTION, ("source",))
        return f"{check_name(self.name or self.source, '[dataset] name')}-{self.resolved_size()}px"

    def check(self) -> None:
        """Raise :class:`~pipeline.errors.ConfigError` naming the first invalid setting."""
        check(self, SECTION)

    def ignored(self) -> list[Problem]:
        """Settings the source would silently ignore."""
        spec = self.spec()
        problems = []
        if spec.root_use == "unused" and self.root:
            readers = [n for n in SOURCES.names() if SOURCES[n].root_use != "unused"]
            problems.append(Problem(("root", "source"), (
                f"source {self.source} always reads {spec.default_root} and never root, so root would be silently "
                f"ignored: to index that folder, set source = {', '.join(readers[:-1])} or {readers[-1]} (the "
                f"layout the folder holds); to use the {self.source} dataset, clear root")))
        if not spec.decodes_files:
            problems += unread(self, ["on_bad_image"], "source", fix=(
                f"source {self.source} loads pixel arrays, not image files, so there are no bad images to "
                "skip and the value would be silently ignored: remove on_bad_image"))
        return problems

    def problems(self) -> list[Problem]:
        """Ignored settings, a missing root, and a stored size outside 0 or 8..1024."""
        problems = self.ignored()
        if self.spec().root_use == "required" and not self.root:
            problems.append(Problem(("root", "source"),
                                    f"source {self.source} needs the dataset folder: set root to it"))
        if self.stored_size < 0 or 0 < self.stored_size < 8 or self.stored_size > 1024:
            problems.append(Problem(("stored_size",), "use 0 (native) or 8..1024 pixels"))
        return problems


def recorded_dataset_dir(root: str | Path, experiment: str) -> Path | None:
    """The dataset folder under ``root`` that ``experiment`` recorded in its ``config.json``, if any."""
    recorded = recorded_dataset_settings(root, experiment)
    if recorded is None:
        return None
    known = significant(IndexSettings())
    try:
        # Not key(): a run recorded before ignored settings were refused still names its folder.
        return dataset_dir(root, IndexSettings(**{k: v for k, v in recorded.items() if k in known})._folder_name())
    except (ConfigError, TypeError):
        return None


def build_index(settings: IndexSettings, out_dir: str | Path, client: Client | None = None) -> dict:
    """Index the configured source into ``out_dir``; returns the summary dict.

    Image files are decoded on ``client``'s cluster when given (``out_dir`` must then
    be on storage its workers share), else with ``settings.dask_scheduler``; the
    output is the same byte for byte. Array sources (Fashion-MNIST) need no decoding.
    """
    settings.check()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    source, root = settings.spec(), settings.dataset_root()
    if isinstance(source, ArraySource):
        index, skipped = _index_arrays(source.load(root), source.class_names, settings.resolved_size(), out_dir)
    else:
        index, skipped = _index_files(source.list_images(root), settings, out_dir, client)
    index.to_parquet(out_dir / INDEX_FILE, index=False)
    skipped.to_parquet(out_dir / SKIPPED_FILE, index=False)
    summary = {
        "source": settings.source,
        "root": str(Path(root).resolve()),
        "stored_size": settings.resolved_size(),
        "images": {s: int((index["split"] == s).sum()) for s in SPLITS},
        "classes": int(index["label"].nunique()),
        "skipped": int(len(skipped)),
        "seconds": round(time.perf_counter() - started, 3),
    }
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary


def format_summary(summary: dict) -> str:
    """One human-readable paragraph for the terminal."""
    imgs = ", ".join(f"{n} {s}" for s, n in summary["images"].items())
    return (
        f"indexed {summary['source']} ({summary['root']}): {imgs} images, {summary['classes']} classes, "
        f"stored at {summary['stored_size']}x{summary['stored_size']}, {summary['skipped']} skipped, "
        f"{summary['seconds']:.1f}s"
    )


def _resize_gray(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[1] == size and images.shape[2] == size:
        return images
    out = np.empty((images.shape[0], size, size), np.uint8)
    for lo in range(0, images.shape[0], 4096):
        x = torch.from_numpy(images[lo : lo + 4096]).float().unsqueeze(1)
        y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[lo : lo + 4096] = y.squeeze(1).round().clamp(0, 255).to(torch.uint8).numpy()
    return out


def _index_arrays(splits: dict[str, ArraySplit], class_names: tuple[str, ...], size: int,
                  out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    n = sum(splits[s].images.shape[0] for s in SPLITS)
    store = create_store(out_dir / STORE_FILE, n, size)
    frames, lo = [], 0
    for split in SPLITS:
        s = splits[split]
        gray = _resize_gray(s.images, size)
        store[lo : lo + len(gray)] = gray[..., None]  # broadcast grayscale to RGB
        h, w = s.images.shape[1:3]
        frames.append(
            pd.DataFrame(
                {
                    "split": split,
                    "label": s.labels.astype(np.int64),
                    "class_id": [str(int(c)) for c in s.labels],
                    "class_name": [class_names[int(c)] for c in s.labels],
                    "path": None,
                    "width": w,
                    "height": h,
                    "mode": "L",
                }
            )
        )
        lo += len(gray)
    store.flush()
    del store
    index = pd.concat(frames, ignore_index=True)
    index.insert(0, "image_id", np.arange(len(index), dtype=np.int64))
    index["path"] = index["path"].astype("string")
    return index, _empty_skipped()


def _empty_skipped() -> pd.DataFrame:
    return pd.DataFrame({"split": pd.Series([], dtype="string"), "path": pd.Series([], dtype="string"),
                         "error": pd.Series([], dtype="string")})


def _decode_partition(items: list[tuple[int, str]], store_path: str, size: int) -> list[tuple]:
    store = np.load(store_path, mmap_mode="r+")
    out = []
    for row, path in items:
        try:
            pixels, (w, h), mode = decode_image(Path(path), size)
        except BadImageError as exc:
            out.append((row, -1, -1, "", str(exc)))
            continue
        store[row] = pixels
        out.append((row, w, h, mode, ""))
    store.flush()
    return out


def _index_files(listing: SourceListing, settings: IndexSettings, out_dir: Path,
                 client: Client | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    size = settings.resolved_size()
    rec = listing.records.copy()
    rec["split"] = pd.Categorical(rec["split"], categories=list(SPLITS), ordered=True)
    rec = rec.sort_values(["split", "class_id", "path"], kind="stable").reset_index(drop=True)
    rec["split"] = rec["split"].astype(str)
    store_path = out_dir / STORE_FILE
    create_store(store_path, len(rec), size).flush()
    items = [(i, str(listing.root / p)) for i, p in enumerate(rec["path"])]
    bag = db.from_sequence(items, partition_size=settings.partition_size)
    decoded = bag.map_partitions(_decode_partition, str(store_path), size)
    with ProgressBar(minimum=2.0):  # in-process schedulers only; a cluster ignores it
        (results,) = compute([decoded], client, settings.dask_scheduler)
    res = pd.DataFrame(results, columns=["row", "width", "height", "mode", "error"]).sort_values("row")
    bad = res["error"] != ""
    if bad.any() and settings.on_bad_image == "fail":
        first = res.loc[bad, "error"].iloc[0]
        raise BadImageError(
            f"{first} ({int(bad.sum())} bad image(s) in total). Fix or delete the file, or set "
            "[dataset] on_bad_image = skip to leave bad images out and list them in skipped.parquet"
        )
    classes = listing.classes.set_index("class_id")
    rec["label"] = classes.loc[rec["class_id"], "label"].to_numpy().astype(np.int64)
    rec["class_name"] = classes.loc[rec["class_id"], "class_name"].to_numpy()
    rec["width"] = res["width"].to_numpy()
    rec["height"] = res["height"].to_numpy()
    rec["mode"] = res["mode"].to_numpy()
    skipped = rec.loc[bad.to_numpy(), ["split", "path"]].assign(error=res.loc[bad, "error"].to_numpy())
    keep = np.flatnonzero(~bad.to_numpy())
    if bad.any():
        _compact_store(store_path, keep, size)
    index = rec.iloc[keep].reset_index(drop=True)
    index.insert(0, "image_id", np.arange(len(index), dtype=np.int64))
    index = index[["image_id", "split", "label", "class_id", "class_name", "path", "width", "height", "mode"]]
    for col in ("split", "class_id", "class_name", "path", "mode"):
        index[col] = index[col].astype("string")
    return index, skipped.astype("string").reset_index(drop=True)


def _compact_store(store_path: Path, keep: np.ndarray, size: int) -> None:
    old = np.load(store_path, mmap_mode="r")
    tmp = store_path.with_name("pixels.compact.npy")
    new = create_store(tmp, len(keep), size)
    for lo in range(0, len(keep), 4096):
        new[lo : lo + 4096] = old[keep[lo : lo + 4096]]
    new.flush()
    del new, old
    tmp.replace(store_path)
