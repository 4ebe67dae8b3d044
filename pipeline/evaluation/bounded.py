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
  queries are searched with a query, so each block gets the same neighbours (the
  same rows in the kept columns, the same labels beyond them: past the kept columns
  the search is exact only where a near tie joins two labels);
* every block is scored over the same width, ``required_neighbors`` of *all* the
  queries (the largest R, not the block's), because MAP@R sums each row of that
  width with numpy's pairwise summation, whose rounding depends on the row length;
* the per-query values are gathered in query order and averaged once, as one array,
  exactly as :func:`~pipeline.evaluation.metrics.retrieval_metrics` averages them.

A caller that keeps more neighbour columns than the metrics need (``min_neighbors``)
widens the search but not the scored width, so its choice moves no digit. (The
all-at-once code scored the widened matrix: where ``min_neighbors`` exceeded the
largest R, which only toy data reach, MAP@R's last digit moved with it.)

Blocks are independent (a pure :func:`retrieve_block` per block), so with a
``cluster`` (:mod:`pipeline.evaluation.on_cluster`) they run on dask workers, which
receive the gallery once, and come back in query order to the same arrays: the
values do not depend on where or in which blocks the queries were searched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pipeline.evaluation.gallery import Gallery
from pipeline.evaluation.metrics import (map_at_r, precision_at_k, r_precision, relevant_counts,
                                         required_neighbors)
from pipeline.knn import knn_search

if TYPE_CHECKING:
    from pipeline.evaluation.on_cluster import ClusterGallery

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


def block_rows(width: int, budget: int = 0) -> int:
    """Queries per block so a block's ``rows x width`` pairs fit ``budget`` bytes (0:
    :data:`BLOCK_BYTES`), at least 1."""
    return max(1, (budget or BLOCK_BYTES) // (max(int(width), 1) * PAIR_BYTES))


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


def search_gallery(gallery: Gallery, queries: np.ndarray, k: int, *, exclude: np.ndarray | None = None,
                   block_size: int = 4096, exact_columns: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(distances, rows)`` ``(Q, k)`` of each query's k nearest gallery rows: exact
    :func:`pipeline.knn.knn_search`, or the gallery's IVF index. Either answer depends
    on the query alone, not on the other queries of its block.

    With ``exact_columns``, the exact search guarantees the canonical rows of the first
    ``exact_columns`` places only, and beyond them the canonical rows' labels (what the
    metrics read), which spares the exact distances of near ties within one label."""
    if gallery.ivf is None:
        by_label = {} if exact_columns is None else {"labels": gallery.labels, "exact_columns": exact_columns}
        return knn_search(queries, gallery.vectors, k, exclude=exclude, backend=gallery.backend,
                          block_size=block_size, **by_label)
    return gallery.ivf.search(gallery.vectors, queries, k, gallery.nprobe, exclude=exclude)


@dataclass(frozen=True)
class BlockPlan:
    """What every block of one retrieval shares: the precision@k to score, the scored width
    (``need``), the searched width, the neighbour columns kept and the search's block size."""

    ks: tuple[int, ...]
    need: int
    width: int
    columns: int
    block_size: int

    @property
    def short(self) -> int:
        """Neighbours that precision@k and the kept columns read (at most the width)."""
        return min(self.width, max([self.columns, *self.ks]))


def retrieve_block(gallery: Gallery, plan: BlockPlan, queries: np.ndarray, labels: np.ndarray, r: np.ndarray,
                   skip: np.ndarray | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One block: its per-query scores (:func:`score_block`) and its first ``plan.columns``
    neighbour rows. Pure, so it runs in this process or on any dask worker alike."""
    # One search per block: its output is the block's (rows, width) lists only.
    # Past the kept columns only the neighbours' labels are read.
    _, idx = search_gallery(gallery, queries, plan.width, exclude=skip, block_size=plan.block_size,
                            exact_columns=plan.columns)
    scores = score_block(gallery.labels[idx[:, : plan.need]], labels, r, plan.ks)
    if gallery.ivf is not None and plan.short < plan.width:
        # An IVF search of R neighbours probes more lists than nprobe where R needs them; a
        # user of the index asking for k gets fewer lists' worth. precision@k and the kept
        # columns come from a search as short as they read, so they measure the index at k.
        _, idx = search_gallery(gallery, queries, plan.short, exclude=skip, block_size=plan.block_size)
        for k in plan.ks:
            scores[f"precision_at_{k}"] = precision_at_k(gallery.labels[idx], labels, k)
    return scores, idx[:, : plan.columns].copy()  # a copy: the block's full lists are freed on return


def bounded_retrieval(query_vectors: np.ndarray, query_labels: np.ndarray, database_vectors: np.ndarray,
                      database_labels: np.ndarray, *, ks: Sequence[int] = (1, 10, 30), backend: str = "auto",
                      exclude: np.ndarray | None = None, min_neighbors: int = 0, columns: int = 0,
                      rows: int | None = None) -> Retrieval:
    """Retrieval metrics of the queries against the database, one block of queries at a time
    (:func:`gallery_retrieval` over an exact gallery searched with ``backend``)."""
    return gallery_retrieval(query_vectors, query_labels, Gallery(database_vectors, np.asarray(database_labels),
                                                                  backend),
                             ks=ks, exclude=exclude, min_neighbors=min_neighbors, columns=columns, rows=rows)


def gallery_retrieval(query_vectors: np.ndarray, query_labels: np.ndarray, gallery: Gallery, *,
                      ks: Sequence[int] = (1, 10, 30), exclude: np.ndarray | None = None, min_neighbors: int = 0,
                      columns: int = 0, rows: int | None = None, cluster: ClusterGallery | None = None) -> Retrieval:
    """Retrieval metrics of the queries against ``gallery``, one block of queries at a time.

    Args:
        query_vectors, query_labels: ``(Q, d)`` and ``(Q,)``.
        gallery: the database and how it is searched (:mod:`pipeline.evaluation.gallery`).
        ks: the precision@k to report.
        exclude: int ``(Q,)`` database row of each query to leave out (the queries are
            database members); R is then one less, as in ``self_excluded``.
        min_neighbors: search at least this many neighbours (capped at the database),
            for a caller that keeps more columns than the metrics need; no metric moves.
        columns: neighbour columns to keep per query (capped at the search width).
        rows: queries per block; default :func:`block_rows` of the search width and the
            gallery's ``block_bytes`` (on a
            cluster, fewer, so that every worker gets blocks: see ``cluster``).
        cluster: the gallery on a dask cluster (:class:`~pipeline.evaluation.on_cluster.ClusterGallery`):
            the blocks run on its workers and come back in query order.

    Returns a :class:`Retrieval`: for an exact gallery the means equal
    ``retrieval_metrics(database_labels[idx], ...)`` of one all-at-once search of
    ``required_neighbors(...)`` neighbours, and ``nearest`` equals the first
    ``columns`` columns of every query's neighbours, while only one block's
    neighbour lists are ever held by one process. Neither depends on ``rows`` or
    ``cluster``, to the last digit.
    """
    query_labels = np.asarray(query_labels)
    database_labels = gallery.labels
    self_excluded = exclude is not None
    need = required_neighbors(query_labels, database_labels, ks=ks, self_excluded=self_excluded)
    width = max(need, min(min_neighbors, len(database_labels) - int(self_excluded)))
    r = relevant_counts(query_labels, database_labels, self_excluded=self_excluded)
    n = len(query_labels)
    step = block_rows(width, gallery.block_bytes) if rows is None else max(1, int(rows))
    if cluster is not None and rows is None:
        step = cluster.block_rows(n, step)
    plan = BlockPlan(tuple(ks), need, width, min(columns, width), step)
    names = [f"precision_at_{k}" for k in ks] + ["r_precision", "map_at_r"]
    scores = {name: np.empty(n) for name in names}
    nearest = np.empty((n, plan.columns), dtype=np.int64)
    spans = [(start, min(start + step, n)) for start in range(0, n, step)]
    blocks = ((query_vectors[a:b], query_labels[a:b], r[a:b], None if exclude is None else np.asarray(exclude)[a:b])
              for a, b in spans)
    if cluster is None:  # lazily, one block at a time
        results = (retrieve_block(gallery, plan, *block) for block in blocks)
    else:
        results = cluster.map_blocks(retrieve_block, plan, list(blocks))
    for (start, stop), (block_scores, block_nearest) in zip(spans, results, strict=True):
        for name, values in block_scores.items():
            scores[name][start:stop] = values
        nearest[start:stop] = block_nearest
        del block_scores, block_nearest
    return Retrieval(mean_scores(scores, r), nearest)
