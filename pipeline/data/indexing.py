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
from pipeline.data.settings import IndexSettings
from pipeline.data.sources import ArraySource
from pipeline.data.sources.base import ArraySplit, SourceListing
from pipeline.data.sources.decode import decode_image
from pipeline.errors import BadImageError
from pipeline.paths import DATASET_SUMMARY_FILE as SUMMARY_FILE
from pipeline.paths import SKIPPED_FILE

if TYPE_CHECKING:
    from distributed import Client

SPLITS = ("train", "val")


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
