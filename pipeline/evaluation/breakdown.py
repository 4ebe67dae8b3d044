"""Where retrieval fails: precision@k per query and per class, and which classes'
images turn up among each class's neighbours.

The means of :mod:`pipeline.evaluation.metrics` say how well; these tables say
where not. All are computed from the validation search's neighbour matrix
(``(Q, K)`` database rows, nearest first), so they cost no extra kNN search.

Lone queries (their class has no database item, see
:func:`pipeline.evaluation.metrics.lone_queries`) get NaN precision: nothing
could be retrieved, so a 0 would read as a failure of the embedding. Their
neighbours still count in :func:`confusion_counts`: they show where such
images land.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.errors import ConfigError
from pipeline.evaluation.metrics import lone_queries, precision_at_k

# Column types of ``metrics/queries/epoch-NNN.parquet``, less the ``epoch`` column the file adds (readers outside this package rely on them).
QUERIES_SCHEMA = pa.schema([("image_id", pa.int64()), ("label", pa.int64()), ("precision", pa.float64()),
                            ("neighbors", pa.list_(pa.int64()))])
CONFUSION_COLUMNS = ("query_label", "neighbor_label", "count")


def query_precision(neighbor_labels: np.ndarray, query_labels: np.ndarray, k: int, *,
                    database_labels: np.ndarray | None = None, self_excluded: bool = False) -> np.ndarray:
    """Precision@k of each query, float64 ``(Q,)``; NaN for lone queries when
    ``database_labels`` is given (without it every query gets a number)."""
    per_query = precision_at_k(neighbor_labels, query_labels, k)
    if database_labels is None:
        return per_query
    return np.where(lone_queries(query_labels, database_labels, self_excluded=self_excluded), np.nan, per_query)


def per_class_precision(
    neighbor_labels: np.ndarray,
    query_labels: np.ndarray,
    k: int = 30,
    *,
    database_labels: np.ndarray | None = None,
    self_excluded: bool = False,
) -> pd.DataFrame:
    """Mean precision@k per query class, to spot the classes the embedding confuses.

    Returns a DataFrame with columns ``label``, ``n_queries``, ``precision_at_k``,
    one row per query class in sorted label order.

    When ``database_labels`` is given, classes whose queries are lone (e.g. a
    validation class with no training image) keep their row, with ``n_queries``
    counting their queries, but get NaN as precision: they are left out of
    :func:`pipeline.evaluation.metrics.retrieval_metrics`' means, and a 0 would
    read as "the embedding failed" when nothing could be retrieved. Keeping the
    row (rather than dropping it) makes the gap visible in the table; pandas'
    ``mean()`` skips the NaN, as the overall means do.
    """
    per_query = query_precision(neighbor_labels, query_labels, k, database_labels=database_labels,
                                self_excluded=self_excluded)
    frame = pd.DataFrame({"label": np.asarray(query_labels), "precision_at_k": per_query})
    grouped = frame.groupby("label", sort=True)["precision_at_k"]
    return pd.DataFrame(
        {"n_queries": grouped.size(), "precision_at_k": grouped.mean()}
    ).reset_index()[["label", "n_queries", "precision_at_k"]]


def query_table(query_ids: np.ndarray, query_labels: np.ndarray, precision: np.ndarray,
                neighbor_ids: np.ndarray) -> pa.Table:
    """One row per query: ``image_id``, ``label``, ``precision`` and ``neighbors``
    (the image ids of ``neighbor_ids``' row, nearest first), typed as :data:`QUERIES_SCHEMA`."""
    neighbor_ids = np.asarray(neighbor_ids, dtype=np.int64)
    q = len(query_ids)
    if neighbor_ids.ndim != 2 or len(neighbor_ids) != q or len(query_labels) != q or len(precision) != q:
        raise ConfigError(f"query_table: {q} query ids need as many labels, precisions and neighbour rows; got "
                          f"{len(query_labels)}, {len(precision)} and neighbours of shape {neighbor_ids.shape}")
    # A fixed-width list column from the flat ids: no Python list per query (10k queries at Tiny ImageNet).
    offsets = np.arange(q + 1, dtype=np.int64) * neighbor_ids.shape[1]
    neighbors = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(neighbor_ids.reshape(-1)))
    return pa.Table.from_arrays([pa.array(np.asarray(query_ids, dtype=np.int64)),
                                 pa.array(np.asarray(query_labels, dtype=np.int64)),
                                 pa.array(np.asarray(precision, dtype=np.float64)), neighbors],
                                schema=QUERIES_SCHEMA)


def confusion_counts(neighbor_labels: np.ndarray, query_labels: np.ndarray, k: int) -> pd.DataFrame:
    """How often each class appears among the first ``k`` neighbours of each query class.

    Returns int64 columns ``query_label``, ``neighbor_label``, ``count``, one row
    per pair that occurs (absent pairs are 0), sorted by both labels. A query
    class's counts sum to ``k`` times its number of queries.
    """
    neighbor_labels = np.asarray(neighbor_labels)
    query_labels = np.asarray(query_labels)
    if neighbor_labels.ndim != 2 or len(neighbor_labels) != len(query_labels) or neighbor_labels.shape[1] < k:
        raise ConfigError(f"confusion_counts: need {len(query_labels)} rows of at least k = {k} neighbour labels, "
                          f"got shape {neighbor_labels.shape}")
    pairs = np.stack([np.repeat(query_labels, k), neighbor_labels[:, :k].reshape(-1)], axis=1).astype(np.int64)
    if not len(pairs):
        return pd.DataFrame({c: np.zeros(0, dtype=np.int64) for c in CONFUSION_COLUMNS})
    unique, counts = np.unique(pairs, axis=0, return_counts=True)
    return pd.DataFrame({"query_label": unique[:, 0], "neighbor_label": unique[:, 1],
                         "count": counts.astype(np.int64)})
