"""Retrieval metrics in bounded memory: precision@k, R-precision and MAP@R computed
block by block over the queries.

R-precision and MAP@R need each query's R nearest database items, R being the size
of its class in the database: about 6,000 on Fashion-MNIST, 100,000 for a 1M-image
gallery of 10 classes. Searching every query at once would hold queries x R
neighbours (10k x 100k x 12 bytes = 12 GB of :func:`pipeline.knn.knn_search` output
alone, several times that while it ranks them). Here one block of queries is
searched and scored at a time; only each query's scores and the first few columns
of its neighbour list (what precision@k, the per-class and per-query tables and the
class confusion read) outlive the block.

The values are those of the all-at-once
:func:`pipeline.evaluation.metrics.retrieval_metrics` to the last digit:

* :func:`pipeline.knn.knn_search`'s canonical order does not depend on which other
  queries are searched with a query, so each block gets the same neighbours;
* every block is scored over the same width, ``required_neighbors`` of *all* the
  queries (the largest R, not the block's), because MAP@R sums each row of that
  width with numpy's pairwise summation, whose rounding depends on the row length;
* the per-query values are gathered in query order and averaged once, as one array,
  exactly as :func:`~pipeline.evaluation.metrics.retrieval_metrics` averages them.

A caller that keeps more neighbour columns than the metrics need (``min_neighbors``)
widens the search but not the scored width, so its choice moves no digit. (The
all-at-once code scored the widened matrix: where ``min_neighbors`` exceeded the
largest R, which only toy data reach, MAP@R's last digit moved with it.)

Blocks are independent (a pure :func:`score_block` per block), so a caller may also
map them over workers and assemble the per-query arrays itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.evaluation.metrics import (map_at_r, precision_at_k, r_precision, relevant_counts,
                                         required_neighbors)
from pipeline.knn import knn_search

# Bytes one (query, neighbour) pair costs while its block is searched and scored.
# knn_search's answer is only 12 (float32 distance + int64 row), but while it ranks
# the candidates canonically it holds float64 keys, sort orders, tie masks and
# chain numbers of each, and scoring adds the neighbours' labels, hit masks and
# float64 running precisions: measured 105-127 bytes a pair at 60k and 1M x 64
# galleries. Budgeting on 12 would overshoot the budget tenfold.
PAIR_BYTES = 128
# Working memory of one block. 256 MiB keeps validation well inside 1 GB at
# Fashion-MNIST scale (R = 6,000: ~350 queries a block) and leaves room for what
# knn_search holds per call besides the block (the database's row norms);
# blocks stay big enough that those per-call costs are small next to
# the search itself. Tests shrink it (read at call time, as ``bounded.BLOCK_BYTES``).
BLOCK_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Retrieval:
    """What :func:`bounded_retrieval` returns: the means and the neighbour columns kept."""

    metrics: dict[str, float]  # as retrieval_metrics: precision_at_<k>, r_precision, map_at_r
    nearest: np.ndarray  # int64 (Q, columns): each query's first database rows, nearest first


def block_rows(width: int) -> int:
    """Queries per block so a block's ``rows x width`` pairs fit :data:`BLOCK_BYTES` (at least 1)."""
    return max(1, BLOCK_BYTES // (max(int(width), 1) * PAIR_BYTES))


def score_block(neighbor_labels: np.ndarray, query_labels: np.ndarray, r: np.ndarray,
                ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-query precision@k for each k in ``ks``, R-precision and MAP@R of one block.

    ``neighbor_labels`` ``(B, width)``: database labels of each query's neighbours,
    nearest first; ``r`` ``(B,)``: :func:`relevant_counts` of the block's queries.
    Returns float64 ``(B,)`` arrays keyed like
    :func:`~pipeline.evaluation.metrics.retrieval_metrics`; lone queries (R = 0) get
    NaN R-precision and MAP@R, and a number for precision@k that the means skip.
    """
    scores = {f"precision_at_{k}": precision_at_k(neighbor_labels, query_labels, k) for k in ks}
    scores["r_precision"] = r_precision(neighbor_labels, query_labels, r)
    scores["map_at_r"] = map_at_r(neighbor_labels, query_labels, r)
    return scores


def mean_scores(scores: dict[str, np.ndarray], r: np.ndarray) -> dict[str, float]:
    """The means :func:`~pipeline.evaluation.metrics.retrieval_metrics` reports: over
    the queries with ``r > 0``, in query order; NaN when there are none."""
    keep = np.asarray(r) > 0
    return {name: float(values[keep].mean()) if keep.any() else float("nan") for name, values in scores.items()}


def bounded_retrieval(query_vectors: np.ndarray, query_labels: np.ndarray, database_vectors: np.ndarray,
                      database_labels: np.ndarray, *, ks: Sequence[int] = (1, 10, 30), backend: str = "auto",
                      exclude: np.ndarray | None = None, min_neighbors: int = 0, columns: int = 0,
                      rows: int | None = None) -> Retrieval:
    """Retrieval metrics of the queries against the database, one block of queries at a time.

    Args:
        query_vectors, query_labels: ``(Q, d)`` and ``(Q,)``.
        database_vectors, database_labels: ``(N, d)`` and ``(N,)``.
        ks: the precision@k to report.
        backend: :func:`pipeline.knn.knn_search`'s backend.
        exclude: int ``(Q,)`` database row of each query to leave out (the queries are
            database members); R is then one less, as in ``self_excluded``.
        min_neighbors: search at least this many neighbours (capped at the database),
            for a caller that keeps more columns than the metrics need; no metric moves.
        columns: neighbour columns to keep per query (capped at the search width).
        rows: queries per block; default :func:`block_rows` of the search width.

    Returns a :class:`Retrieval`: the means equal
    ``retrieval_metrics(database_labels[idx], ...)`` of one all-at-once search of
    ``required_neighbors(...)`` neighbours, and ``nearest`` equals the first
    ``columns`` columns of every query's neighbours, while only one block's
    neighbour lists are ever held.
    """
    query_labels = np.asarray(query_labels)
    database_labels = np.asarray(database_labels)
    self_excluded = exclude is not None
    need = required_neighbors(query_labels, database_labels, ks=ks, self_excluded=self_excluded)
    width = max(need, min(min_neighbors, len(database_labels) - int(self_excluded)))
    r = relevant_counts(query_labels, database_labels, self_excluded=self_excluded)
    step = block_rows(width) if rows is None else max(1, int(rows))
    n = len(query_labels)
    names = [f"precision_at_{k}" for k in ks] + ["r_precision", "map_at_r"]
    scores = {name: np.empty(n) for name in names}
    nearest = np.empty((n, min(columns, width)), dtype=np.int64)
    for start in range(0, n, step):
        stop = min(start + step, n)
        skip = None if exclude is None else np.asarray(exclude)[start:stop]
        # One knn_search call per block: its output is the block's (rows, width) lists only.
        _, idx = knn_search(query_vectors[start:stop], database_vectors, width, exclude=skip,
                            backend=backend, block_size=step)
        block = score_block(database_labels[idx[:, :need]], query_labels[start:stop], r[start:stop], ks)
        for name, values in block.items():
            scores[name][start:stop] = values
        nearest[start:stop] = idx[:, : nearest.shape[1]]
        del idx, block  # free the block's lists before the next search allocates its own
    return Retrieval(mean_scores(scores, r), nearest)
