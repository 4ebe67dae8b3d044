"""Re-ranking a query against the whole database, for the rare query whose tie group
at the k-th place may extend past the candidates a backend returned."""

from __future__ import annotations

import numpy as np

from pipeline.knn import limits
from pipeline.knn.database import Database, squared_norms
from pipeline.knn.exact import exact_rows


def rescan(queries: np.ndarray, skip: np.ndarray | None, k: int, db: Database) -> tuple[np.ndarray, np.ndarray]:
    """Canonical top k over the whole database, for queries whose tie group may pass the candidates.

    A float64 expansion (matrix products over bounded blocks) ranks every row to
    within ``float64_error``; only rows within twice that of its k-th value can be in
    the top k (the k best plus rows tied with them to float64 precision), and just
    those get exact distances. Returns squared distances and indices, ``(len(queries), k)``.
    """
    n, dim = db.vectors.shape
    norms = db.squared_norms()
    # The float64 keys of a whole query group against the database: at most
    # max(SCAN_ELEMENTS, n) values; database rows are converted step rows at a time.
    group = max(1, min(len(queries), limits.SCAN_ELEMENTS // n))
    step = max(1, limits.SCAN_ELEMENTS // max(group, dim, 1))
    out_sq = np.empty((len(queries), k))
    out_idx = np.empty((len(queries), k), dtype=np.int64)
    for first in range(0, len(queries), group):
        block = queries[first : first + group]
        block64 = block.astype(np.float64)
        block_sq = squared_norms(block)
        keys = np.empty((len(block), n))
        for lo in range(0, n, step):
            product = block64 @ db.vectors[lo : lo + step].astype(np.float64).T
            product *= -2.0
            product += block_sq[:, None]
            product += norms[lo : lo + step]
            keys[:, lo : lo + step] = db.sign * product
        if skip is not None:
            inside = np.flatnonzero(skip[first : first + group] >= 0)
            keys[inside, skip[first + inside]] = np.inf
        # k rows have a key <= kth, so an exact key <= kth + slack: a row whose key
        # exceeds kth + 2 * slack cannot be among the k best.
        kth = np.partition(keys, k - 1, axis=1)[:, k - 1]
        limit = kth + 2 * db.float64_error * (block_sq + db.max_sq)
        for i, query in enumerate(block):
            candidates = np.flatnonzero(keys[i] <= limit[i])  # ascending; never the excluded row
            out_sq[first + i], out_idx[first + i] = exact_top_k(query, candidates, keys[i, candidates], k, db)
    return out_sq, out_idx


def exact_top_k(
    query: np.ndarray, rows: np.ndarray, approx: np.ndarray, k: int, db: Database
) -> tuple[np.ndarray, np.ndarray]:
    """The first k of ``rows`` (ascending, at least k) by (exact key, index): squared distances, indices.

    ``approx`` are the rows' float64 expansion keys; a large tie group is ranked per
    distinct vector (:meth:`Database.distinct`), identical rows having identical distances.
    """
    if len(rows) > limits.DEDUPLICATE_ABOVE:
        ids, first = db.distinct(rows, approx)
        squared = exact_rows(query, db.vectors, first)[ids]
    else:
        squared = exact_rows(query, db.vectors, rows)
    key = db.sign * squared
    pick = np.arange(len(rows))
    if len(rows) > k:
        kth = np.partition(key, k - 1)[k - 1]
        below = np.flatnonzero(key < kth)
        pick = np.concatenate([below, np.flatnonzero(key == kth)[: k - len(below)]])
    pick = pick[np.lexsort((rows[pick], key[pick]))]
    return squared[pick], rows[pick]
