"""From a backend's float32 candidates to the canonical top k: near-ties and small
distances recomputed exactly, ties broken by row index, and a full rescan where
the tie group at the k-th place may reach past the candidates."""

from __future__ import annotations

import numpy as np

from pipeline.knn import limits
from pipeline.knn.database import Database, squared_norms
from pipeline.knn.exact import exact_pairs
from pipeline.knn.rescan import rescan


def canonical_top_k(
    queries: np.ndarray,
    squared: np.ndarray,
    idx: np.ndarray,
    skip: np.ndarray | None,
    k: int,
    db: Database,
) -> tuple[np.ndarray, np.ndarray]:
    """The canonical k rows per query (see :func:`pipeline.knn.knn_search`) from a backend's candidates.

    ``squared`` and ``idx`` are ``(B, m)`` expansion squared distances and database
    rows, the ``m`` best by the expansion in any order (``m >= k + 1`` unless they
    are the whole database; the excluded row may be among them). With ``tol`` the
    expansion's error bound, candidates whose sorted values lie within ``2 * tol``
    of each other form near-tie chains: those that reach the first k places get
    exact distances and are re-sorted, which fixes every place before the chain
    end. A row not returned has an expansion value at least the largest returned,
    so it can still beat the k-th exact value only if that value lies within tol of
    the last candidate; such queries are re-ranked over the whole database.
    Returns float32 distances and int64 indices, ``(B, k)``.
    """
    sign = db.sign
    n_queries = len(idx)
    valid = idx >= 0
    if skip is not None:
        valid &= idx != skip[:, None]
    key = np.where(valid, sign * squared.astype(np.float64), np.inf)
    order = np.argsort(key, axis=1)
    key = np.take_along_axis(key, order, 1)
    idx = np.take_along_axis(idx, order, 1).astype(np.int64, copy=False)
    query_sq = squared_norms(queries)
    tol = db.expansion_error * (query_sq + db.max_sq)

    # near[:, j]: places j and j + 1 may be in either order (inf - inf is NaN: never near).
    with np.errstate(invalid="ignore"):
        near = np.diff(key, axis=1) <= 2 * tol[:, None]
    chain = np.zeros(key.shape, dtype=np.int64)
    np.cumsum(~near, axis=1, out=chain[:, 1:])
    exact = np.zeros(key.shape, dtype=bool)
    exact[:, 1:] |= near
    exact[:, :-1] |= near
    exact &= chain <= chain[:, k - 1 : k]
    # Small distances too, for accuracy; the first k places are always valid.
    exact[:, :k] |= sign * key[:, :k] < limits.EXPANSION_TRUSTED * query_sq[:, None]

    value = key.copy()
    pair_rows, pair_cols = np.nonzero(exact)
    if len(pair_rows):
        value[pair_rows, pair_cols] = sign * exact_pairs(queries, db.vectors, pair_rows, idx[pair_rows, pair_cols])
        touched = np.unique(pair_rows)
        resort = np.lexsort((idx[touched], value[touched]), axis=-1)
        value[touched] = np.take_along_axis(value[touched], resort, 1)
        idx[touched] = np.take_along_axis(idx[touched], resort, 1)
        exact[touched] = np.take_along_axis(exact[touched], resort, 1)

    # An upper bound on the k-th exact key, and the largest candidate expansion key.
    kth = value[:, k - 1] + np.where(exact[:, k - 1], 0.0, tol)
    count = valid.sum(axis=1)
    last = key[np.arange(n_queries), count - 1]
    available = len(db.vectors) - (0 if skip is None else (skip >= 0))
    again = np.flatnonzero((count < available) & ~(kth + tol < last))

    top_sq = sign * value[:, :k]
    top_idx = np.ascontiguousarray(idx[:, :k])
    if len(again):
        top_sq[again], top_idx[again] = rescan(queries[again], None if skip is None else skip[again], k, db)
    return np.sqrt(np.maximum(top_sq, 0.0)).astype(np.float32), top_idx
