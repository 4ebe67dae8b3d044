"""The faiss candidate search: exact brute force with ``faiss.knn`` (nearest, on the
database in place) or ``IndexFlatIP`` over augmented vectors (farthest). faiss is optional, so it is
imported only when this backend runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from pipeline.errors import ConfigError


def faiss_search(
    queries: np.ndarray,
    database: np.ndarray,
    want: int,
    farthest: bool,
    exclude: np.ndarray | None,
    block_size: int,
    device: str | None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(first_row, squared_distances, indices)`` of the ``want`` best candidates per query block.

    The excluded row, if among them, is left for the caller to drop; ``exclude``
    and ``device`` are accepted only to share the torch backend's signature.
    """
    try:
        import faiss
    except ImportError as error:
        raise ConfigError(
            "knn_search: backend='faiss' needs the faiss package (pip install faiss-cpu); "
            "install it or use backend='torch'."
        ) from error
    dim = database.shape[1]
    if farthest:
        # Farthest by L2 is the largest ||x||^2 - 2 q.x (+ ||q||^2, constant per query),
        # i.e. a max inner product between [-2q, 1] and [x, ||x||^2].
        index = faiss.IndexFlatIP(dim + 1)
        for start in range(0, len(database), block_size):
            index.add(_augment_database(database[start : start + block_size]))
    for start in range(0, len(queries), block_size):
        block = queries[start : start + block_size]
        if farthest:
            scores, idx = index.search(_augment_queries(block), want)
            squared = scores + np.einsum("ij,ij->i", block, block)[:, None]
        else:
            # faiss.knn runs the brute-force search IndexFlatL2 would, but on the
            # caller's array: an index would copy the database (245 MiB at 1M x 64).
            with blas_tiles(faiss):
                squared, idx = faiss.knn(block, database, want)
        yield start, squared, idx.astype(np.int64, copy=False)


# faiss's BLAS tiles (queries x database rows). Its default, 4096 x 1024, spends most of a
# short search (k = 21 over 60k x 64: the label audit) updating every query's heap once per
# 1,024 rows; 1,024 x 16,384 took 8.4 instead of 13.5 s there and 3.4 instead of 3.65 s at
# k = 6,010 (validation), with a 64 MiB distance tile. The answer is the same: only the
# order of the work changes, and canonical_top_k fixes the order of near ties anyway.
BLAS_TILES = (1024, 16384)


@contextmanager
def blas_tiles(faiss) -> Iterator[None]:
    """faiss's BLAS tile sizes set to :data:`BLAS_TILES` for one search, then restored
    (they are process-wide settings that other faiss users may have chosen)."""
    saved = faiss.cvar.distance_compute_blas_query_bs, faiss.cvar.distance_compute_blas_database_bs
    faiss.cvar.distance_compute_blas_query_bs, faiss.cvar.distance_compute_blas_database_bs = BLAS_TILES
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_query_bs, faiss.cvar.distance_compute_blas_database_bs = saved


def _augment_database(rows: np.ndarray) -> np.ndarray:
    """``[x, ||x||^2]`` rows, float32."""
    return np.hstack([rows, np.einsum("ij,ij->i", rows, rows)[:, None]]).astype(np.float32)


def _augment_queries(rows: np.ndarray) -> np.ndarray:
    """``[-2q, 1]`` rows, float32."""
    return np.hstack([-2.0 * rows, np.ones((len(rows), 1), dtype=np.float32)]).astype(np.float32)
