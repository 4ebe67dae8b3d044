"""Retrieval metrics computed from the labels of each query's ranked neighbours.

The definitions follow pytorch-metric-learning's ``AccuracyCalculator`` so our
numbers are comparable with published deep-metric-learning results:

* precision@k — share of the first k neighbours that have the query's class.
* R-precision — precision@R, where R is the number of database items of the
  query's class (minus the query itself when it is excluded from its own search).
* MAP@R — ``(1/R) * sum_{i<=R} precision@i * [neighbour i is relevant]``. The
  division is by R, not by the number of hits, so a ranking is rewarded only for
  putting relevant items first *and* finding all R of them.

Queries whose class has no other database item (R = 0, "lone" queries) have no
defined R-precision or MAP@R; like pytorch-metric-learning we leave them out of
every mean, precision@k included. :func:`lone_queries` marks them, so callers
can count and report what was left out, and the breakdowns of
:mod:`pipeline.evaluation.breakdown` give them NaN rather than a misleading 0.

Inputs are ``neighbor_labels`` ``(Q, K)``: the database labels of each query's
neighbours, nearest first (``database_labels[indices]`` from
:func:`pipeline.knn.knn_search`). Labels may be integers or strings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.errors import ConfigError

# Rows per step in triplet_precision, so huge triplet sets need little extra memory.
_TRIPLET_CHUNK = 16384
# Values of each gathered array per step in indexed_triplet_precision (4 MiB of float32).
_TRIPLET_VALUES = 1 << 20


def precision_at_k(neighbor_labels: np.ndarray, query_labels: np.ndarray, k: int) -> np.ndarray:
    """Per-query share of the first ``k`` neighbours that have the query's class.

    Returns float64 ``(Q,)``.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"precision_at_k: k must be a positive integer, got {k!r}.")
    hits = _hits(neighbor_labels, query_labels)
    _require_columns(hits, k, f"precision@{k}")
    return hits[:, :k].sum(axis=1) / k


def r_precision(neighbor_labels: np.ndarray, query_labels: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Per-query precision@R with a per-query ``R`` (see :func:`relevant_counts`).

    Returns float64 ``(Q,)``; NaN where ``R == 0``.
    """
    hits = _hits(neighbor_labels, query_labels)
    r = _check_r(r, hits, "R-precision")
    within_r = np.arange(hits.shape[1]) < r[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (hits & within_r).sum(axis=1) / r


def map_at_r(neighbor_labels: np.ndarray, query_labels: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Per-query mean average precision at R, normalised by R.

    Returns float64 ``(Q,)``; NaN where ``R == 0``.
    """
    hits = _hits(neighbor_labels, query_labels)
    r = _check_r(r, hits, "MAP@R")
    relevant = hits & (np.arange(hits.shape[1]) < r[:, None])
    precision_at_i = np.cumsum(relevant, axis=1) / np.arange(1, hits.shape[1] + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (precision_at_i * relevant).sum(axis=1) / r


def relevant_counts(
    query_labels: np.ndarray, database_labels: np.ndarray, *, self_excluded: bool = False
) -> np.ndarray:
    """R for each query: database items sharing its class, minus one if the query is itself in the database.

    Returns int64 ``(Q,)``; 0 for classes absent from the database.
    """
    query_labels = _labels(query_labels, "query_labels")
    classes, counts = np.unique(_labels(database_labels, "database_labels"), return_counts=True)
    r = np.zeros(len(query_labels), dtype=np.int64)
    found = np.zeros(len(query_labels), dtype=bool)
    if len(classes):
        # Look each query class up in the sorted database classes; misses keep R = 0.
        pos = np.minimum(np.searchsorted(classes, query_labels), len(classes) - 1)
        found = classes[pos] == query_labels
        r[found] = counts[pos[found]]
    if self_excluded:
        if not found.all():
            raise ConfigError(
                "relevant_counts: self_excluded=True but some query labels are not in database_labels; "
                "with self-exclusion the queries must be database members — pass self_excluded=False "
                "for a separate query set."
            )
        r -= 1
    return r


def lone_queries(
    query_labels: np.ndarray, database_labels: np.ndarray, *, self_excluded: bool = False
) -> np.ndarray:
    """Boolean ``(Q,)``: is the query lone, i.e. has no relevant database item (R = 0)?

    These are the queries :func:`retrieval_metrics` leaves out of its means:
    for a separate query set, those whose class is absent from the database;
    with ``self_excluded``, those that are the only database item of their class.
    """
    return relevant_counts(query_labels, database_labels, self_excluded=self_excluded) == 0


def required_neighbors(
    query_labels: np.ndarray,
    database_labels: np.ndarray,
    *,
    ks: Sequence[int] = (1, 10, 30),
    self_excluded: bool = False,
) -> int:
    """The ``k`` to ask :func:`pipeline.knn.knn_search` for so :func:`retrieval_metrics` can run.

    That is ``max(max(ks), max R)``, capped at what the database can supply.
    """
    r = relevant_counts(query_labels, database_labels, self_excluded=self_excluded)
    available = len(database_labels) - int(self_excluded)
    return int(min(max(max(ks), int(r.max(initial=0))), available))


def retrieval_metrics(
    neighbor_labels: np.ndarray,
    query_labels: np.ndarray,
    database_labels: np.ndarray,
    *,
    ks: Sequence[int] = (1, 10, 30),
    self_excluded: bool = False,
) -> dict[str, float]:
    """Mean precision@k for each k in ``ks``, R-precision and MAP@R over non-lone queries.

    ``neighbor_labels`` must have at least ``max(max(ks), max R)`` columns, so
    callers ask the kNN search for ``k = required_neighbors(...)`` neighbours
    (at Tiny ImageNet scale R is 500 per class for validation queries against
    the training set, 499 for training queries with ``self_excluded=True``).
    ``self_excluded`` says the queries are database members left out of their
    own neighbour lists (``knn_search(..., exclude=...)``), so R is one less.
    This holds every query's R neighbours at once; :mod:`pipeline.evaluation.bounded`
    gives the same means block by block over the queries, in bounded memory.

    Returns ``{"precision_at_<k>": ..., "r_precision": ..., "map_at_r": ...}``;
    values are NaN when every query is lone. The means are over the queries
    :func:`lone_queries` does not mark; count those to say how many the
    numbers cover.
    """
    hits_width = _hits(neighbor_labels, query_labels).shape[1]
    r = relevant_counts(query_labels, database_labels, self_excluded=self_excluded)
    needed = max(max(ks), int(r.max(initial=0)))
    if hits_width < needed:
        raise ConfigError(
            f"retrieval_metrics: neighbor_labels has {hits_width} columns but needs {needed} "
            f"(max of ks={tuple(ks)} and the largest class size R={int(r.max(initial=0))}); "
            f"run the kNN search with k=required_neighbors(...) = {needed}."
        )
    # Same rule as lone_queries (R == 0), kept inline to reuse this r.
    keep = r > 0
    neighbor_labels = np.asarray(neighbor_labels)[keep]
    query_labels = np.asarray(query_labels)[keep]
    r = r[keep]
    metrics = {f"precision_at_{k}": _mean(precision_at_k(neighbor_labels, query_labels, k)) for k in ks}
    metrics["r_precision"] = _mean(r_precision(neighbor_labels, query_labels, r))
    metrics["map_at_r"] = _mean(map_at_r(neighbor_labels, query_labels, r))
    return metrics


def triplet_precision(emb_q: np.ndarray, emb_p: np.ndarray, emb_n: np.ndarray) -> float:
    """Share of triplets whose positive is strictly closer to the query than the negative (Euclidean).

    Ties count as failures: an embedding that collapses everything to one point scores 0.
    """
    arrays = [np.asarray(a) for a in (emb_q, emb_p, emb_n)]
    if any(a.ndim != 2 for a in arrays) or len({a.shape for a in arrays}) != 1:
        raise ConfigError(
            "triplet_precision: query, positive and negative embeddings must be 2-D arrays of one shape, "
            f"got {[a.shape for a in arrays]}."
        )
    if len(arrays[0]) == 0:
        raise ConfigError("triplet_precision: no triplets given; sample at least one triplet.")
    return _correct_triplets(*arrays) / len(arrays[0])


def indexed_triplet_precision(vectors: np.ndarray, query: np.ndarray, positive: np.ndarray,
                              negative: np.ndarray) -> float:
    """:func:`triplet_precision` of ``vectors[query]``, ``vectors[positive]`` and ``vectors[negative]``,
    gathering at most ``_TRIPLET_VALUES`` values of each at a time: for raw pixels, 2,000 triplets
    of 3,072 values gathered at once were 74 MiB on top of the largest arrays there are."""
    query, positive, negative = (np.asarray(a, dtype=np.int64) for a in (query, positive, negative))
    if not len(query) == len(positive) == len(negative):
        raise ConfigError("indexed_triplet_precision: query, positive and negative rows must have one length, "
                          f"got {len(query)}, {len(positive)} and {len(negative)}.")
    if len(query) == 0:
        raise ConfigError("indexed_triplet_precision: no triplets given; sample at least one triplet.")
    step = max(1, _TRIPLET_VALUES // max(vectors.shape[1], 1))
    correct = sum(_correct_triplets(vectors[query[lo : lo + step]], vectors[positive[lo : lo + step]],
                                    vectors[negative[lo : lo + step]]) for lo in range(0, len(query), step))
    return correct / len(query)


def _correct_triplets(q: np.ndarray, p: np.ndarray, n: np.ndarray) -> int:
    """Triplets whose positive is strictly closer than the negative, ``_TRIPLET_CHUNK`` rows at a time."""
    correct = 0
    for start in range(0, len(q), _TRIPLET_CHUNK):
        rows = slice(start, start + _TRIPLET_CHUNK)
        # Comparing squared distances gives the same order without square roots.
        to_p = _row_sq_norm(q[rows] - p[rows])
        to_n = _row_sq_norm(q[rows] - n[rows])
        correct += int((to_p < to_n).sum())
    return correct


def _row_sq_norm(diff: np.ndarray) -> np.ndarray:
    diff = diff.astype(np.float64, copy=False)
    return np.einsum("ij,ij->i", diff, diff)


def _labels(labels: np.ndarray, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ConfigError(f"{name} must be a 1-D array with one label per item, got shape {labels.shape}.")
    return labels


def _hits(neighbor_labels: np.ndarray, query_labels: np.ndarray) -> np.ndarray:
    """Boolean ``(Q, K)``: does neighbour j of query i share its class?"""
    neighbor_labels = np.asarray(neighbor_labels)
    query_labels = _labels(query_labels, "query_labels")
    if neighbor_labels.ndim != 2 or len(neighbor_labels) != len(query_labels):
        raise ConfigError(
            f"neighbor_labels must be 2-D with one row per query ({len(query_labels)} rows), "
            f"got shape {neighbor_labels.shape}."
        )
    return neighbor_labels == query_labels[:, None]


def _require_columns(hits: np.ndarray, needed: int, what: str) -> None:
    if hits.shape[1] < needed:
        raise ConfigError(
            f"{what} needs at least {needed} neighbours per query but neighbor_labels has "
            f"{hits.shape[1]} columns; run the kNN search with k >= {needed}."
        )


def _check_r(r: np.ndarray, hits: np.ndarray, what: str) -> np.ndarray:
    r = np.asarray(r)
    if r.shape != (len(hits),) or not np.issubdtype(r.dtype, np.integer) or (len(r) and r.min() < 0):
        raise ConfigError(
            f"{what}: r must be a non-negative integer array with one entry per query "
            f"({len(hits)}), got {r.dtype} {r.shape}."
        )
    _require_columns(hits, int(r.max(initial=0)), what)
    return r


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")
