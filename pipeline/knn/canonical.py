"""From a backend's float32 candidates to the canonical top k: near-ties and small
distances recomputed exactly, ties broken by row index, and where the tie group at
the k-th place may reach past the candidates, a wider candidate search, then a full
rescan. With labels, only the near ties that join two labels are recomputed."""

from __future__ import annotations

from typing import Callable

import numpy as np

from pipeline.knn import limits
from pipeline.knn.database import Database, squared_norms
from pipeline.knn.exact import exact_pairs
from pipeline.knn.rescan import rescan

# More candidates for some queries: (queries, skip) -> (squared, rows, the next Widen) or None.
Widen = Callable[[np.ndarray, "np.ndarray | None"], "tuple[np.ndarray, np.ndarray, Widen | None] | None"]


def canonical_top_k(
    queries: np.ndarray,
    squared: np.ndarray,
    idx: np.ndarray,
    skip: np.ndarray | None,
    k: int,
    db: Database,
    error: float,
    labels: np.ndarray | None = None,
    exact_columns: int = 0,
    widen: Widen | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The canonical k rows per query (see :func:`pipeline.knn.knn_search`) from a backend's candidates.

    ``squared`` and ``idx`` are ``(B, m)`` expansion squared distances and database
    rows, the ``m`` best by the expansion in any order (``m >= k + 1`` unless they
    are the whole database; the excluded row may be among them), whose error is at most
    ``error * (||q||^2 + max ||x||^2)`` (``db.expansion_error`` for float32 keys,
    ``db.float64_error`` for float64 ones). With ``tol`` that bound, candidates whose
    sorted values lie within ``2 * tol`` of each other form near-tie chains: those that
    reach the first k places get exact distances and are re-sorted, which fixes every
    place before the chain end. A row not returned has an expansion value at least the
    largest returned, so it can still beat the k-th exact value only if that value lies
    within tol of the last candidate; such queries are re-ranked over the whole database.

    With ``labels`` (int64 codes of the database rows), only the first ``exact_columns``
    places are fixed that way; beyond them a candidate gets its exact distance only
    where a candidate of another label lies within ``2 * tol`` of it, since only such
    a pair can come in the wrong order, and ranking by (exact distance where computed,
    expansion elsewhere, row) then gives the canonical *label* at every place
    (:func:`label_boundary`).

    With ``widen``, queries whose tie group may pass the candidates first get more
    candidates (``widen(queries, skip)``: their squared distances, rows and the next
    ``widen``, or None once they would be the whole database), before any exact
    distance; only what the whole database's worth would still not settle is rescanned.
    Returns float32 distances and int64 indices, ``(B, k)``.
    """
    sign = db.sign
    n_queries = len(idx)
    valid = idx >= 0
    if skip is not None:
        valid &= idx != skip[:, None]
    key = np.where(valid, sign * squared.astype(np.float64), np.inf)
    with np.errstate(invalid="ignore"):
        ascending = bool((key[:, 1:] >= key[:, :-1]).all())
    if ascending:
        # faiss returns its candidates sorted: a sort of R = 6,000 columns costs as much as the search.
        idx = idx.astype(np.int64)
    else:
        order = np.argsort(key, axis=1)
        key = np.take_along_axis(key, order, 1)
        idx = np.take_along_axis(idx, order, 1).astype(np.int64, copy=False)
    query_sq = squared_norms(queries)
    tol = error * (query_sq + db.max_sq)
    count = valid.sum(axis=1)
    available = len(db.vectors) - (0 if skip is None else (skip >= 0))
    last = key[np.arange(n_queries), count - 1]
    if widen is not None:
        # The k-th exact key below is at most key[:, k - 1] + 2 * tol, so a query not caught
        # here never needs a rescan: the crowded ones get wider candidates (far cheaper than a
        # rescan where the crowd at the k-th place is a few hundred rows deep: a random
        # network's embedding at the 6,000th neighbour) before any exact distance is spent.
        crowded = (count < available) & ~(key[:, k - 1] + 3 * tol < last)
        if crowded.any():
            return _split(queries, sign * key, idx, skip, k, db, error, labels, exact_columns, widen, crowded)

    # near[:, j]: places j and j + 1 may be in either order (inf - inf is NaN: never near).
    with np.errstate(invalid="ignore"):
        near = np.diff(key, axis=1) <= 2 * tol[:, None]
    chain = np.zeros(key.shape, dtype=np.int64)
    np.cumsum(~near, axis=1, out=chain[:, 1:])
    exact = np.zeros(key.shape, dtype=bool)
    exact[:, 1:] |= near
    exact[:, :-1] |= near
    reach = k if labels is None else min(exact_columns, k)
    if reach:
        exact &= chain <= chain[:, reach - 1 : reach]
        # Small distances too, for accuracy; the first k places are always valid.
        trusted = limits.EXPANSION_TRUSTED * error / limits.EXPANSION_ERROR
        exact[:, :reach] |= sign * key[:, :reach] < trusted * query_sq[:, None]
    else:
        exact[:] = False
    if labels is not None:
        # Only a row with a near pair can have a place near one of another label; with float64
        # keys that is a row with a true tie, so most rows skip this pass.
        # Invalid places (key inf: no row, or the excluded one) sort last and are never near.
        tied = np.flatnonzero(near.any(axis=1))
        if len(tied):
            some = key[tied]
            exact[tied] |= label_boundary(some, np.where(np.isfinite(some), labels[np.maximum(idx[tied], 0)], -1),
                                          2 * tol[tied])

    value = key.copy()
    pair_rows, pair_cols = np.nonzero(exact)
    if len(pair_rows):
        value[pair_rows, pair_cols] = sign * exact_pairs(queries, db.vectors, pair_rows, idx[pair_rows, pair_cols])
        touched = np.unique(pair_rows)
        resort = sort_by_key_then_row(value[touched], idx[touched])
        value[touched] = np.take_along_axis(value[touched], resort, 1)
        idx[touched] = np.take_along_axis(idx[touched], resort, 1)
        exact[touched] = np.take_along_axis(exact[touched], resort, 1)

    # An upper bound on the k-th exact key, and the largest candidate expansion key.
    kth = value[:, k - 1] + np.where(exact[:, k - 1], 0.0, tol)
    again = np.flatnonzero((count < available) & ~(kth + tol < last))

    top_sq = sign * value[:, :k]
    top_idx = np.ascontiguousarray(idx[:, :k])
    if len(again):
        top_sq[again], top_idx[again] = rescan(queries[again], None if skip is None else skip[again], k, db)
    return np.sqrt(np.maximum(top_sq, 0.0)).astype(np.float32), top_idx


def _split(queries: np.ndarray, squared: np.ndarray, idx: np.ndarray, skip: np.ndarray | None, k: int, db: Database,
           error: float, labels: np.ndarray | None, exact_columns: int, widen: Widen,
           crowded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`canonical_top_k` of the ``crowded`` queries over wider candidates, of the rest over theirs."""
    distances = np.empty((len(queries), k), dtype=np.float32)
    rows = np.empty((len(queries), k), dtype=np.int64)
    for part, wider in ((crowded, True), (~crowded, False)):
        if not part.any():
            continue
        part_skip = None if skip is None else skip[part]
        more = widen(queries[part], part_skip) if wider else None
        candidates = (more[0], more[1]) if more is not None else (squared[part], idx[part])
        distances[part], rows[part] = canonical_top_k(queries[part], *candidates, part_skip, k, db, error, labels,
                                                      exact_columns, more[2] if more is not None else None)
    return distances, rows


def sort_by_key_then_row(value: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Per row, the order by (``value``, ``rows``): ``np.lexsort((rows, value))``, faster.

    The values are nearly sorted already (exact distances move a candidate only past
    its near ties), which a stable sort handles in about one pass; a full lexsort of
    R = 6,000 columns took a third of validation. Only rows where equal values end up
    out of row order, which exact ties alone make, are lexsorted.
    """
    order = np.argsort(value, axis=1, kind="stable")
    ranked, ranked_rows = np.take_along_axis(value, order, 1), np.take_along_axis(rows, order, 1)
    misordered = ((ranked[:, 1:] == ranked[:, :-1]) & (ranked_rows[:, 1:] < ranked_rows[:, :-1])).any(axis=1)
    if misordered.any():
        order[misordered] = np.lexsort((rows[misordered], value[misordered]), axis=-1)
    return order


def label_boundary(key: np.ndarray, labels: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """Places whose candidate lies within ``gap`` (per row) of a candidate of another label.

    ``key`` ``(B, m)`` is sorted along each row and ``labels`` follows it. The nearest
    candidate of another label is the one just before the place's run of equal labels
    or just after it, so two running extremes over the run boundaries find them all.
    Every pair that the expansion may order wrongly and whose order moves a label is
    then ranked by exact distances: the label sequence is the canonical one.
    """
    n_rows, m = key.shape
    out = np.zeros(key.shape, dtype=bool)
    if m < 2:
        return out
    change = labels[:, 1:] != labels[:, :-1]  # a run of another label starts at place j + 1
    # Places in 4 bytes where they fit: these arrays are as large as the block's candidates.
    position = np.int32 if m < 2**31 else np.int64
    places = np.arange(m, dtype=position)
    # Key of the last place before each run, or -inf: the previous candidate of another label.
    start = np.zeros(key.shape, dtype=position)
    start[:, 1:] = np.where(change, places[1:], 0)
    np.maximum.accumulate(start, axis=1, out=start)
    before = np.where(start > 0, np.take_along_axis(key, np.maximum(start - 1, 0), 1), -np.inf)
    # Key of the first place after each run, or inf: the next candidate of another label.
    end = np.full(key.shape, m, dtype=position)
    end[:, :-1] = np.where(change, places[1:], m)
    end = np.minimum.accumulate(end[:, ::-1], axis=1)[:, ::-1]
    after = np.where(end < m, np.take_along_axis(key, np.minimum(end, m - 1), 1), np.inf)
    with np.errstate(invalid="ignore"):
        out = (key - before <= gap[:, None]) | (after - key <= gap[:, None])
    return out
