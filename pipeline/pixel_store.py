"""The packed pixel store: every image of a dataset decoded once into one
``(N, H, W, 3)`` uint8 ``.npy`` file, row ``i`` holding image id ``i``.

Later stages memory-map it and gather batches with index arrays, so nothing
after indexing decodes a JPEG or opens a file per image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import DatasetLayoutError

STORE_FILE = "pixels.npy"
INDEX_FILE = "index.parquet"
SKIPPED_FILE = "skipped.parquet"
SUMMARY_FILE = "summary.json"


def create_store(path: str | Path, n: int, size: int, channels: int = 3) -> np.memmap:
    """A writable, zero-filled store of ``n`` images of ``size`` x ``size``."""
    return np.lib.format.open_memmap(Path(path), mode="w+", dtype=np.uint8, shape=(n, size, size, channels))


def open_store(dataset_dir: str | Path) -> np.ndarray:
    """Memory-map a dataset's store read-only: an ``(N, H, W, C)`` uint8 array."""
    path = Path(dataset_dir) / STORE_FILE
    if not path.is_file():
        raise DatasetLayoutError(f"pixel store {path} is missing; run the IndexDataset task first")
    store = np.load(path, mmap_mode="r")
    if store.dtype != np.uint8 or store.ndim != 4:
        raise DatasetLayoutError(f"pixel store {path} has shape {store.shape} {store.dtype}; expected (N, H, W, C) uint8")
    return store


def read_index(dataset_dir: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A dataset's Parquet index (one row per image, row ``i`` = image id ``i``)."""
    path = Path(dataset_dir) / INDEX_FILE
    if not path.is_file():
        raise DatasetLayoutError(f"dataset index {path} is missing; run the IndexDataset task first")
    return pd.read_parquet(path, columns=columns)


def gather(store: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Copy the images ``ids`` (any order, repeats allowed) out of the store.

    Reading rows in sorted order keeps memory-mapped access sequential; the
    result is then put back in the requested order.
    """
    ids = np.asarray(ids, dtype=np.int64)
    uniq, inverse = np.unique(ids, return_inverse=True)
    return store[uniq][inverse]
