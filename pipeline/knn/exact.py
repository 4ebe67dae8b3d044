"""Exact float64 squared distances, summed in a fixed order so that ties are decided
the same way whatever the batch, block size or backend."""

from __future__ import annotations

import numpy as np

from pipeline.knn import limits


def exact_squared(queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """float64 ``sum((x - q)^2)`` for paired ``(m, d)`` rows (or one ``(1, d)`` query), in a fixed order.

    The squares are summed by repeatedly folding the second half of the columns onto
    the first (a pairwise sum whose tree depends on d alone), never by a reduction
    whose order numpy or BLAS may pick by shape or memory alignment: each value
    depends on its two vectors alone, not on the batch, block size or backend, so
    ties are decided the same way everywhere.
    """
    terms = rows.astype(np.float64)
    terms -= queries
    terms *= terms
    width = terms.shape[1]
    while width > 1:
        half = (width + 1) // 2
        # In place: the two halves never overlap (width - half <= half). Short rows go a
        # column at a time: numpy is slow on many rows of a few strided values.
        if width - half >= 16:
            terms[:, : width - half] += terms[:, half:width]
        else:
            for column in range(width - half):
                terms[:, column] += terms[:, half + column]
        width = half
    return terms[:, 0].copy() if width else np.zeros(len(terms))


def exact_pairs(queries: np.ndarray, database: np.ndarray, query_rows: np.ndarray, db_rows: np.ndarray) -> np.ndarray:
    """Exact squared distances between ``queries[query_rows]`` and ``database[db_rows]``, in bounded chunks."""
    out = np.empty(len(query_rows))
    chunk = limits.exact_chunk_rows(database.shape[1])
    for lo in range(0, len(query_rows), chunk):
        hi = lo + chunk
        out[lo:hi] = exact_squared(queries[query_rows[lo:hi]], database[db_rows[lo:hi]])
    return out


def exact_rows(query: np.ndarray, database: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Exact squared distances between one ``(d,)`` query and ``database[rows]``, in bounded chunks."""
    out = np.empty(len(rows))
    chunk = limits.exact_chunk_rows(database.shape[1])
    for lo in range(0, len(rows), chunk):
        out[lo : lo + chunk] = exact_squared(query[None], database[rows[lo : lo + chunk]])
    return out
