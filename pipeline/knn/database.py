"""The searched database together with what ranking it exactly needs: the ranking
direction, error bounds, and (computed on first use) row norms and duplicate rows."""

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
        self.max_sq = float(squared_norms(vectors).max())
        dim = vectors.shape[1]
        self.expansion_error = limits.EXPANSION_ERROR * max(1.0, math.sqrt(dim / 1024))
        # A float64 expansion and exact_squared each stay within (2d + 4) roundings
        # (eps = 1.1e-16) of a term at most ||q||^2 + ||x||^2: a worst-case bound, not a
        # statistical one, and still so tight that only genuine ties exceed it.
        self.float64_error = 8 * (dim + 4) * float(np.finfo(np.float64).eps)
        self._squared_norms: np.ndarray | None = None
        self._distinct: tuple[np.ndarray, np.ndarray] | None = None

    def squared_norms(self) -> np.ndarray:
        """float64 ``||x||^2`` of every row."""
        if self._squared_norms is None:
            step = max(1, limits.SCAN_ELEMENTS // max(self.vectors.shape[1], 1))
            self._squared_norms = np.concatenate(
                [squared_norms(self.vectors[lo : lo + step]) for lo in range(0, len(self.vectors), step)]
            )
        return self._squared_norms

    def distinct(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, first)``: each row's distinct-vector id, and each id's first row."""
        if self._distinct is None:
            n, dim = self.vectors.shape
            if dim == 0:
                self._distinct = np.zeros(n, dtype=np.int64), np.zeros(1, dtype=np.int64)
            else:
                raw = self.vectors.view(np.dtype((np.void, dim * self.vectors.itemsize))).ravel()
                _, first, ids = np.unique(raw, return_index=True, return_inverse=True)
                self._distinct = ids.ravel().astype(np.int64, copy=False), first.astype(np.int64, copy=False)
        return self._distinct


def squared_norms(rows: np.ndarray) -> np.ndarray:
    """float64 ``||x||^2`` of each row of ``rows`` (float32 inputs are accumulated in float64)."""
    return np.einsum("ij,ij->i", rows, rows, dtype=np.float64)
