"""The packed pixel store: every image of a dataset decoded once into one
``(N, H, W, 3)`` uint8 ``.npy`` file, row ``i`` holding image id ``i``.

Later stages memory-map it and gather batches with index arrays, so nothing
after indexing decodes a JPEG or opens a file per image.
"""

from __future__ import annotations

import errno
import mmap
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipeline.errors import DatasetLayoutError
from pipeline.paths import DATASET_INDEX_FILE as INDEX_FILE
from pipeline.paths import PIXEL_STORE_FILE as STORE_FILE
from pipeline.storage import corrupt_artifact, reading


def create_store(path: str | Path, n: int, size: int, channels: int = 3) -> np.memmap:
    """A writable, zero-filled store of ``n`` images of ``size`` x ``size``.

    The file's blocks are reserved up front: a memory-mapped file is otherwise
    sparse, and a full disk would surface as a SIGBUS that kills the process
    halfway through indexing instead of an ``OSError`` (ENOSPC) here.
    """
    store = np.lib.format.open_memmap(Path(path), mode="w+", dtype=np.uint8, shape=(n, size, size, channels))
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, store.offset + store.nbytes)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):  # filesystems without it stay sparse
            raise
    finally:
        os.close(fd)
    return store


def open_store(dataset_dir: str | Path) -> np.ndarray:
    """Memory-map a dataset's store read-only: an ``(N, H, W, C)`` uint8 array.

    Raises :class:`~pipeline.errors.CorruptArtifactError` if the file is
    truncated, longer than its header says, has a garbled header, or holds a
    different number of images than the index lists. Only the header and the
    index's Parquet footer are read, so opening stays instant on any size.
    """
    dataset_dir = Path(dataset_dir)
    path = dataset_dir / STORE_FILE
    if not path.is_file():
        raise DatasetLayoutError(f"pixel store {path} is missing; run the IndexDataset task first")
    # Truncated ("mmap length is greater than file size") or a garbled header is damage.
    with reading(path, "not a readable .npy array"):
        store = np.load(path, mmap_mode="r")
    if store.dtype != np.uint8 or store.ndim != 4:
        raise corrupt_artifact(path, f"shape {store.shape} {store.dtype}; expected (N, H, W, C) uint8")
    # np.load accepts a file longer than its header says; a mismatch means the
    # header and the data no longer belong together.
    size, expected = os.stat(path).st_size, store.offset + store.nbytes
    if size != expected:
        raise corrupt_artifact(path, f"{size} bytes, but its header {store.shape} needs {expected}")
    rows = _index_rows(dataset_dir)
    if rows is not None and rows != store.shape[0]:
        raise corrupt_artifact(path, f"{store.shape[0]} images, but {dataset_dir / INDEX_FILE} lists {rows}")
    return store


def release_pages(store: np.ndarray) -> None:
    """Let go of the pages of ``store`` (an :func:`open_store` map) this process has read.

    A pass over the whole store (the pixel baseline reads every image) would otherwise
    keep the file's pages counted in this process's memory, 1.3 GB at Tiny ImageNet
    scale, until the store is closed. They stay in the page cache, and reading a row
    again maps it back; a store that is not a file map is left alone.
    """
    pages = getattr(store, "_mmap", None)
    if isinstance(pages, mmap.mmap) and hasattr(pages, "madvise"):
        pages.madvise(mmap.MADV_DONTNEED)


def _index_rows(dataset_dir: Path) -> int | None:
    """The index's row count from its Parquet footer (None if there is no index)."""
    path = dataset_dir / INDEX_FILE
    if not path.is_file():
        return None
    with reading(path, "unreadable Parquet"):
        return pq.read_metadata(path).num_rows


def read_index(dataset_dir: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A dataset's Parquet index (one row per image, row ``i`` = image id ``i``).

    Raises :class:`~pipeline.errors.CorruptArtifactError` if the file is
    truncated or overwritten, or lacks one of ``columns``.
    """
    path = Path(dataset_dir) / INDEX_FILE
    if not path.is_file():
        raise DatasetLayoutError(f"dataset index {path} is missing; run the IndexDataset task first")
    with reading(path, "unreadable Parquet"):
        return pd.read_parquet(path, columns=columns)


def gather(store: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Copy the images ``ids`` (any order, repeats allowed) out of the store.

    Reading rows in sorted order keeps memory-mapped access sequential; the
    result is then put back in the requested order.
    """
    ids = np.asarray(ids, dtype=np.int64)
    uniq, inverse = np.unique(ids, return_inverse=True)
    return store[uniq][inverse]
