"""Evaluate one epoch's embeddings: precision@k (the course's k = 30) and
friends, and where retrieval fails (per query, per class, class confusion),
computed from saved vectors only (no network, no images).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.embedding.embed import Embeddings
from pipeline.errors import ConfigError
from pipeline.evaluation.bounded import gallery_retrieval
from pipeline.evaluation.breakdown import confusion_counts, per_class_precision, query_precision, query_table
from pipeline.evaluation.gallery import Gallery, build_gallery, recall_against_exact
from pipeline.evaluation.metrics import indexed_triplet_precision, lone_queries
from pipeline.evaluation.on_cluster import ClusterGallery
from pipeline.evaluation.settings import ValidationSettings
from pipeline.knn import knn_search
from pipeline.sampling.base import ClassMembers
from pipeline.sampling.uniform import uniform_negatives, uniform_positives
from pipeline.seeds import evaluation_rng
from pipeline.settings import check

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

# Classes named in the lone-query warning; Tiny ImageNet has 200, too many for one line.
_MAX_CLASSES_NAMED = 20


@dataclass(frozen=True)
class Evaluation:
    """One epoch's validation: what :func:`evaluate_epoch` returns, one field per output file."""

    metrics: dict  # the metrics JSON's numbers
    per_class: pd.DataFrame  # label, n_queries, precision_at_<k>
    neighbors: pd.DataFrame  # the figure queries' nearest and farthest training images
    queries: pa.Table  # every validation query: image_id, label, precision, neighbors (figure_k ids)
    confusion: pd.DataFrame  # query_label, neighbor_label, count over the k nearest


def retrieval_scores(queries: Embeddings, gallery: Gallery, *, k: int, exclude: np.ndarray | None = None,
                     min_neighbors: int = 0,
                     cluster: ClusterGallery | None = None) -> tuple[dict[str, float], np.ndarray]:
    """Retrieval metrics of ``queries`` against ``gallery`` and each query's nearest
    database rows (nearest first) from the same search.

    The metrics need each query's R neighbours (R = its class's size in the
    database); they are computed one block of queries at a time, on ``cluster``'s
    workers when given (:func:`pipeline.evaluation.bounded.gallery_retrieval`), so only the returned
    columns are held for every query: ``max(k, min_neighbors)`` of them, fewer
    only when the database is smaller. ``min_neighbors`` may widen the search,
    which changes no metric: the canonical order of :func:`knn_search` makes a
    longer search's first columns those of a shorter one.
    """
    ks = tuple(sorted({1, 10, k}))
    result = gallery_retrieval(queries.vectors, queries.labels, gallery, ks=ks, exclude=exclude,
                               min_neighbors=min_neighbors, columns=max(k, min_neighbors), cluster=cluster)
    return result.metrics, result.nearest


def query_counts(split: str, queries: np.ndarray, database: np.ndarray, *,
                 self_excluded: bool = False) -> dict[str, int]:
    """How many ``split`` queries the retrieval means cover, and how many were left out.

    Returns ``{"queries_<split>": ..., "queries_<split>_excluded": ...}``. A query
    is left out (see :func:`pipeline.evaluation.metrics.lone_queries`) when its class has
    no training image to retrieve -- none at all for validation queries, none
    besides itself for training queries (``self_excluded``). The means keep
    pytorch-metric-learning's definition; this makes the exclusion visible,
    with a warning naming the classes, instead of silent.
    """
    lone = lone_queries(queries, database, self_excluded=self_excluded)
    if lone.any():
        classes = np.unique(np.asarray(queries)[lone])
        named = ", ".join(str(c) for c in classes[:_MAX_CLASSES_NAMED])
        if classes.size > _MAX_CLASSES_NAMED:
            named += f", ... ({classes.size - _MAX_CLASSES_NAMED} more)"
        why = "no other training image" if self_excluded else "no training image"
        log.warning(
            "%d of %d %s queries left out of the retrieval means: their class has %s (labels %s); "
            "give every class at least %s in the training split to measure them",
            int(lone.sum()), len(lone), split, why, named, "two images" if self_excluded else "one image",
        )
    return {f"queries_{split}": int((~lone).sum()), f"queries_{split}_excluded": int(lone.sum())}


def figure_queries(val: Embeddings, n: int, seed: int) -> np.ndarray:
    """Rows of ``n`` validation images from ``n`` different classes (seeded)."""
    classes = np.unique(val.labels)
    rng = evaluation_rng(seed, "figures")
    chosen = np.sort(rng.choice(classes, size=min(n, classes.size), replace=False))
    return np.array([rng.choice(np.flatnonzero(val.labels == c)) for c in chosen], dtype=np.int64)


def evaluate(train: Embeddings, val: Embeddings, settings: ValidationSettings,
             client: Client | None = None) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """``(metrics, per_class, neighbors)`` of :func:`evaluate_epoch`, for callers that need no more."""
    result = evaluate_epoch(train, val, settings, client)
    return result.metrics, result.per_class, result.neighbors


def true_label_scores(val: Embeddings, sample: Embeddings, rows: np.ndarray, truth: Gallery, k: int,
                      client: Client | None) -> dict[str, float]:
    """The retrieval metrics of the validation queries and of the training ``sample`` (the
    gallery's ``rows``) against ``truth``, the gallery with its true labels: ``<key>_true``."""
    cluster = ClusterGallery(client, truth) if client is not None else None
    try:
        val_scores, _ = retrieval_scores(val, truth, k=k, cluster=cluster)
        true_sample = Embeddings(sample.image_ids, truth.labels[rows], sample.vectors)
        train_scores, _ = retrieval_scores(true_sample, truth, k=k, exclude=rows, cluster=cluster)
    finally:
        if cluster is not None:
            cluster.close()
    return {**{f"{name}_val_true": float(v) for name, v in val_scores.items()},
            **{f"{name}_train_true": float(v) for name, v in train_scores.items()}}


def evaluate_epoch(train: Embeddings, val: Embeddings, settings: ValidationSettings,
                   client: Client | None = None, true_labels: np.ndarray | None = None,
                   figures: bool = True, block_bytes: int = 0) -> Evaluation:
    """Compute the epoch's metrics and where retrieval fails.

    Returns an :class:`Evaluation`: the metric dict (keys
    ``precision_at_<k>_val``, ``precision_at_<k>_train`` (:mod:`pipeline.evaluation.metric_names`), ..., plus the counts
    of :func:`query_counts`: ``queries_val``/``queries_train`` are the queries
    the means are over, ``queries_val_excluded``/``queries_train_excluded``
    those left out because their class has no training image to find),
    per-class precision@k on validation (classes with no training image keep
    their row with NaN precision, see :func:`pipeline.evaluation.breakdown.per_class_precision`),
    the nearest/farthest training images of the figure queries (columns
    ``query_id``, ``kind``, ``rank``, ``image_id``, ``distance``), every
    validation query's precision@k (NaN if lone) and ``figure_k`` nearest training
    ids, and the class-confusion counts over the k nearest. The last two come
    from the validation search the metrics use: no extra kNN search.

    With ``client`` (a dask.distributed client), the query blocks of both
    retrievals run on its workers (:mod:`pipeline.evaluation.on_cluster`); every
    value and table is the same. With ``settings.index = "ivf"`` the retrievals
    search an approximate IVF index, and the metrics add ``ivf_recall_at_<k>_val``
    (:func:`~pipeline.evaluation.gallery.recall_against_exact`) over
    ``ivf_recall_queries`` seeded validation queries.

    ``true_labels``: when ``train.labels`` are an experiment's flipped labels, the
    training images' true ones; the retrieval metrics are then also scored against
    them, over the same gallery and training sample, as ``<key>_true``.

    ``figures=False`` leaves the figure queries' neighbours out (an empty table), for a
    caller that keeps only the metrics: the farthest search copies the gallery, which
    for raw pixels (:mod:`pipeline.evaluation.baseline`) is the largest array there is.
    ``block_bytes``: the working memory of one block of queries (0: the default,
    :data:`pipeline.evaluation.bounded.BLOCK_BYTES`); no value depends on it.
    ``val.vectors`` may also be rows computed on demand (with ``len``, ``shape``, and a
    float32 array for a slice or an array of rows, as the raw-pixel baseline's
    :class:`~pipeline.evaluation.baseline.PixelRows`): the queries are read only that way.
    """
    check(settings, "ValidateEpoch")
    if len(train.vectors) <= settings.k or len(val.vectors) == 0:
        raise ConfigError(f"validation needs more than k = {settings.k} training vectors and some validation "
                          f"vectors; got {len(train.vectors)} and {len(val.vectors)}")
    k = settings.k
    gallery = build_gallery(train.vectors, train.labels, backend=settings.knn_backend, index=settings.index,
                            nlist=settings.nlist, nprobe=settings.nprobe, seed=settings.seed, block_bytes=block_bytes)
    cluster = ClusterGallery(client, gallery) if client is not None else None
    try:
        # Only the first max(k, figure_k) neighbours of each query come back: what the
        # per-class, per-query and confusion tables read (the metrics were scored per block).
        val_scores, val_idx = retrieval_scores(val, gallery, k=k, min_neighbors=settings.figure_k, cluster=cluster)
        n_train = min(settings.train_queries, len(train.vectors))
        drawn = evaluation_rng(settings.seed, "train_queries").choice(len(train.vectors), size=n_train,
                                                                       replace=False)
        rows = np.sort(drawn)
        sample = Embeddings(train.image_ids[rows], train.labels[rows], train.vectors[rows])
        train_scores, _ = retrieval_scores(sample, gallery, k=k, exclude=rows, cluster=cluster)
        true_scores = {} if true_labels is None else true_label_scores(
            val, sample, rows, replace(gallery, labels=np.asarray(true_labels)), k, client)
    finally:
        if cluster is not None:
            cluster.close()
    val_neighbors = train.labels[val_idx]
    metrics = {f"{name}_val": value for name, value in val_scores.items()}
    metrics.update({f"{name}_train": value for name, value in train_scores.items()})

    classes = ClassMembers.from_labels(val.labels)
    rng = evaluation_rng(settings.seed, "triplets")
    q = rng.integers(0, len(val.labels), settings.triplets)
    q = q[classes.count[val.labels[q]] > 1]
    p = uniform_positives(classes, q, rng)
    n = uniform_negatives(classes, q, rng)
    metrics["triplet_precision_val"] = indexed_triplet_precision(val.vectors, q, p, n)

    per_class = per_class_precision(val_neighbors, val.labels, k, database_labels=train.labels)
    per_class = per_class.rename(columns={"precision_at_k": f"precision_at_{k}"})
    queries = query_table(val.image_ids, val.labels,
                          query_precision(val_neighbors, val.labels, k, database_labels=train.labels),
                          train.image_ids[val_idx[:, : settings.figure_k]])
    confusion = confusion_counts(val_neighbors, val.labels, k)

    fq = figure_queries(val, settings.figure_queries, settings.seed)
    frames = []
    kinds = (("nearest", False), ("farthest", True)) if figures else ()
    for kind, farthest in kinds:
        dist, idx = knn_search(val.vectors[fq], train.vectors, settings.figure_k, farthest=farthest,
                               backend=settings.knn_backend)
        frames.append(pd.DataFrame({
            "query_id": np.repeat(val.image_ids[fq], settings.figure_k),
            "kind": kind,
            "rank": np.tile(np.arange(settings.figure_k), len(fq)),
            "image_id": train.image_ids[idx.reshape(-1)],
            "distance": dist.reshape(-1),
        }))
    if gallery.ivf is not None:
        recall_rows = np.sort(evaluation_rng(settings.seed, "ivf_recall").choice(
            len(val.vectors), size=min(settings.recall_queries, len(val.vectors)), replace=False))
        metrics[f"ivf_recall_at_{k}_val"] = recall_against_exact(val.vectors[recall_rows], gallery,
                                                                 val_idx[recall_rows, :k])
    metrics = {k_: float(v) for k_, v in metrics.items()}
    if gallery.ivf is not None:
        metrics["ivf_recall_queries"] = len(recall_rows)
    metrics.update(query_counts("val", val.labels, train.labels))
    metrics.update(query_counts("train", sample.labels, train.labels, self_excluded=True))
    metrics.update(true_scores)
    neighbors = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["query_id", "kind", "rank", "image_id", "distance"])
    return Evaluation(metrics, per_class, neighbors, queries, confusion)
