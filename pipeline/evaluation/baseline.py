"""The raw-pixel baseline: the same retrieval metrics with pixels as embeddings,
so the learned numbers can be judged against "no learning at all"."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from pipeline.data.pixel_store import open_store, read_index, release_pages
from pipeline.embedding.embed import Embeddings
from pipeline.evaluation.evaluate import evaluate_epoch
from pipeline.evaluation.settings import BaselineSettings, ValidationSettings
from pipeline.storage import write_text_atomic

if TYPE_CHECKING:
    from distributed import Client


# Pixel values converted to float per step (4 MiB: 85 Tiny ImageNet images, 1,337 of Fashion-MNIST).
# Small steps matter: with 32 MiB ones, the allocator kept 300 MiB of freed float
# tensors mapped, on top of the 1.3 GB of vectors, at 100k x 3,072.
CHUNK_VALUES = 1 << 20
# Working memory of one block of queries once the pixel vectors pass LARGE_VECTORS: a
# quarter of validation's. Such vectors are the largest arrays there are (1.3 GB at
# 100k x 3,072), so the blocks make most of the peak over them: 1,857 MiB over the
# import with validation's 256 MiB budget, 1,419 with this one, the same values. Below
# it (Fashion-MNIST at 14x14: 51 MB) validation's budget stays: the quarter took 48
# instead of 37 s there, since each block pays for the whole gallery again.
BLOCK_BYTES = 64 * 2**20
LARGE_VECTORS = 512 * 2**20


def block_budget(vector_bytes: int) -> int:
    """The block budget for pixel vectors of ``vector_bytes`` in all (0: validation's)."""
    return BLOCK_BYTES if vector_bytes >= LARGE_VECTORS else 0


def pixel_vectors(store: np.ndarray, image_ids: np.ndarray, max_size: int = BaselineSettings.max_size) -> np.ndarray:
    """Flattened float32 pixels in [0, 1], area-downsampled to at most ``max_size``
    pixels a side (raw 64x64x3 vectors would cost 5 GB at Tiny ImageNet scale)."""
    h, channels = store.shape[1], store.shape[3]
    chunk = max(1, CHUNK_VALUES // (h * store.shape[2] * channels))
    size = min(h, max_size)
    # Filled chunk by chunk: a list of chunks and their concatenation held the vectors twice.
    out = np.empty((len(image_ids), size * size * channels), dtype=np.float32)
    for lo in range(0, len(image_ids), chunk):
        x = torch.from_numpy(np.asarray(store[image_ids[lo : lo + chunk]])).permute(0, 3, 1, 2).float() / 255.0
        if size != h:
            x = F.adaptive_avg_pool2d(x, size)
        out[lo : lo + len(x)] = x.reshape(len(x), -1).numpy()
        release_pages(store)
    return out


class PixelRows:
    """The pixel vectors of ``image_ids`` (:func:`pixel_vectors`), computed when rows are read.

    Validation reads its queries only by slices (one block at a time) and row arrays (the
    triplets, the figure queries), so this stands in for the ``(len(image_ids), d)`` float32
    array without holding it: at Tiny ImageNet's size the validation split's vectors are
    117 MiB that no longer sit beside the gallery's 1.2 GB (on a dask client the blocks are
    all computed before they are sent, so there they are held, as before). A slice or a 1-D
    array of rows (integers or a mask) returns a float32 array of those rows.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, store: np.ndarray, image_ids: np.ndarray, max_size: int = BaselineSettings.max_size):
        self.store, self.image_ids, self.max_size = store, np.asarray(image_ids, dtype=np.int64), max_size
        size, channels = min(store.shape[1], max_size), store.shape[3]
        self.shape = (len(self.image_ids), size * size * channels)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        """What the array would hold."""
        return self.shape[0] * self.shape[1] * self.dtype.itemsize

    def __getitem__(self, rows: slice | np.ndarray) -> np.ndarray:
        ids = self.image_ids[rows]
        if ids.ndim != 1:
            raise TypeError(f"PixelRows takes a slice or a 1-D array of rows, got {rows!r}")
        return pixel_vectors(self.store, ids, self.max_size)

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        # Whole, for a caller that needs an array after all (correct, just not bounded).
        vectors = self[:]
        return vectors if dtype is None else vectors.astype(dtype, copy=False)


def pixel_embeddings(store: np.ndarray, index: pd.DataFrame, split: str,
                     max_size: int = BaselineSettings.max_size, *, lazy: bool = False) -> Embeddings:
    """Raw-pixel "embeddings" of one split, aligned like :func:`load_embeddings`; with ``lazy``,
    their vectors are a :class:`PixelRows` (computed as validation reads them)."""
    part = index[index["split"] == split].sort_values("image_id")
    ids = part["image_id"].to_numpy(np.int64)
    vectors = PixelRows(store, ids, max_size) if lazy else pixel_vectors(store, ids, max_size)
    return Embeddings(ids, part["label"].to_numpy(np.int64), vectors)


def pixel_baseline(dataset_dir: str | Path, out_file: str | Path, settings: BaselineSettings,
                   validation: ValidationSettings, client: Client | None = None) -> dict:
    """Evaluate raw pixels of ``dataset_dir`` as embeddings and write the metrics JSON to ``out_file``.

    With ``client``, the query blocks run on its dask workers (the pixel vectors are
    computed here and scattered to them once); the JSON is the same but for ``seconds``.
    """
    started = time.perf_counter()
    store, index = open_store(dataset_dir), read_index(dataset_dir, ["image_id", "split", "label"])
    train = pixel_embeddings(store, index, "train", settings.max_size)
    # The queries are read block by block: only the gallery is held whole.
    val = pixel_embeddings(store, index, "val", settings.max_size, lazy=True)
    # Only the metrics are kept: no figure neighbours (the farthest search would copy the gallery).
    # The queries count as if held: the same budget, hence the same blocks, as before they were lazy.
    budget = block_budget(train.vectors.nbytes + val.vectors.nbytes)
    metrics = evaluate_epoch(train, val, validation, client, figures=False, block_bytes=budget).metrics
    metrics = {**metrics, "max_size": settings.max_size, "seconds": round(time.perf_counter() - started, 3)}
    write_text_atomic(out_file, json.dumps(metrics, indent=2))
    return metrics
