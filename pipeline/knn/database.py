"""The searched database together with what ranking it exactly needs: the ranking
direction, error bounds, row norms (computed on first use) and duplicate rows among candidates."""

from __future__ import annotations

import math

import numpy as np

from pipeline.knn import limits


class Database:
    """The database and what ranking it exactly needs; costly parts are computed on first use."""

    def __init__(self, vectors: np.ndarray, farthest: bool) -> None:
        self.vectors = vectors
        # Ranking key = sign * squared distance: ascending key is the canonical order.
        self.sign = -1.0 if farthest else 1.0
        self._squared_norms: np.ndarray | None = None
        # Block by block: an einsum over the whole database would hold a float64 copy of it.
        self.max_sq = float(self.squared_norms().max(initial=0.0))
        dim = vectors.shape[1]
        self.expansion_error = limits.EXPANSION_ERROR * max(1.0, math.sqrt(dim / 1024))
        # A float64 expansion and exact_squared each stay within (2d + 4) roundings
        # (eps = 1.1e-16) of a term at most ||q||^2 + ||x||^2: a worst-case bound, not a
        # statistical one, and still so tight that only genuine ties exceed it.
        self.float64_error = 8 * (dim + 4) * float(np.finfo(np.float64).eps)

    def squared_norms(self) -> np.ndarray:
        """float64 ``||x||^2`` of every row."""
        if self._squared_norms is None:
            step = max(1, limits.SCAN_ELEMENTS // max(self.vectors.shape[1], 1))
            self._squared_norms = np.concatenate(
                [squared_norms(self.vectors[lo : lo + step]) for lo in range(0, len(self.vectors), step)]
            )
        return self._squared_norms

    def distinct(self, rows: np.ndarray, approx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, first)`` for the given ``rows``: each one's distinct-vector id, and each id's row.

        Only these rows are deduplicated, never the whole database (at 1M x 64 that
        cost 765 MiB and 2.4 s per search). ``approx`` are the rows' float64
        expansion keys: identical vectors get identical keys (in practice; BLAS may
        round by position), so only rows sharing a key are compared, bit for bit,
        with the run's first row. A merge therefore never joins different vectors,
        and a missed one only costs an extra exact distance, so the results
        are exactly those of ranking every row on its own. When few keys repeat
        (no duplicates to speak of) the rows are returned as they are: comparing
        vectors would cost as much as the exact distances it saves.
        """
        order = np.argsort(approx, kind="stable")
        keys = approx[order]
        starts = np.ones(len(rows), dtype=bool)
        starts[1:] = keys[1:] != keys[:-1]
        identity = np.arange(len(rows), dtype=np.int64), rows
        if 2 * int(starts.sum()) > len(rows) or self.vectors.shape[1] == 0:
            return identity
        # Position in `rows` of the first row of each item's key run.
        lead = order[np.flatnonzero(starts)][np.cumsum(starts) - 1]
        # Bit patterns, not values: equal bits give equal distances, with no NaN or -0.0 subtleties.
        bits = self.vectors.view(np.dtype(f"u{self.vectors.itemsize}"))
        same = np.empty(len(rows), dtype=bool)
        chunk = limits.exact_chunk_rows(self.vectors.shape[1])
        for lo in range(0, len(rows), chunk):
            hi = lo + chunk
            same[lo:hi] = (bits[rows[order[lo:hi]]] == bits[rows[lead[lo:hi]]]).all(axis=1)
        owner = np.where(same, lead, order)  # position in `rows` whose vector each item shares
        used, inverse = np.unique(owner, return_inverse=True)
        ids = np.empty(len(rows), dtype=np.int64)
        ids[order] = inverse.ravel()
        return ids, rows[used]


def squared_norms(rows: np.ndarray) -> np.ndarray:
    """float64 ``||x||^2`` of each row of ``rows`` (float32 inputs are accumulated in float64)."""
    return np.einsum("ij,ij->i", rows, rows, dtype=np.float64)
