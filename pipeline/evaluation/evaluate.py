"""Validation of one epoch's embeddings: the course's precision@30 and friends,
computed from saved vectors only (no network, no images).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.embedding.embed import Embeddings
from pipeline.errors import ConfigError
from pipeline.knn import knn_search
from pipeline.evaluation.metrics import (
    lone_queries,
    per_class_precision,
    required_neighbors,
    retrieval_metrics,
    triplet_precision,
)
from pipeline.sampling.base import ClassLayout
from pipeline.sampling.uniform import uniform_negatives, uniform_positives

log = logging.getLogger(__name__)

# Classes named in the lone-query warning; Tiny ImageNet has 200, too many for one line.
_MAX_CLASSES_NAMED = 20


@dataclass(frozen=True)
class ValidationSettings:
    """``k`` = the course's 30; ``train_queries`` = seeded training sample for the
    training accuracy; ``figure_*`` = queries (from distinct classes) and neighbours
    kept for the figures; ``triplets`` = seeded validation triplets."""

    k: int = 30
    train_queries: int = 1000
    figure_queries: int = 5
    figure_k: int = 10
    triplets: int = 2000
    seed: int = 0
    backend: str = "auto"


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


def retrieval_scores(queries: Embeddings, database: Embeddings, *, k: int, backend: str,
                     exclude: np.ndarray | None = None) -> tuple[dict[str, float], np.ndarray]:
    """Retrieval metrics of ``queries`` against ``database`` and the label matrix of neighbours."""
    self_excluded = exclude is not None
    # 30 is always reported: it is the course metric the report and figures show.
    ks = tuple(sorted({1, 10, 30, k}))
    need = required_neighbors(queries.labels, database.labels, ks=ks, self_excluded=self_excluded)
    _, idx = knn_search(queries.vectors, database.vectors, need, exclude=exclude, backend=backend)
    neighbor_labels = database.labels[idx]
    return retrieval_metrics(neighbor_labels, queries.labels, database.labels, ks=ks,
                             self_excluded=self_excluded), neighbor_labels


def query_counts(split: str, queries: np.ndarray, database: np.ndarray, *, self_excluded: bool = False) -> dict[str, int]:
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
    rng = _rng(seed, 3)
    chosen = np.sort(rng.choice(classes, size=min(n, classes.size), replace=False))
    return np.array([rng.choice(np.flatnonzero(val.labels == c)) for c in chosen], dtype=np.int64)


def validate(train: Embeddings, val: Embeddings, settings: ValidationSettings) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Compute the epoch's metrics.

    Returns ``(metrics, per_class, neighbors)``: the metric dict (keys
    ``precision_at_30_val``, ``precision_at_30_train``, ..., plus the counts
    of :func:`query_counts`: ``queries_val``/``queries_train`` are the queries
    the means are over, ``queries_val_excluded``/``queries_train_excluded``
    those left out because their class has no training image to find),
    per-class precision@k on validation (classes with no training image keep
    their row with NaN precision, see :func:`pipeline.evaluation.metrics.per_class_precision`),
    and the nearest/farthest training images of the figure queries (columns
    ``query_id``, ``kind``, ``rank``, ``image_id``, ``distance``).
    """
    for name in ("k", "train_queries", "figure_queries", "figure_k", "triplets"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"[ValidateEpoch] {name} = {getattr(settings, name)}; it must be at least 1")
    if len(train.vectors) <= max(settings.k, 30) or len(val.vectors) == 0:
        raise ConfigError(f"validation needs more than max(k={settings.k}, 30) training vectors and some validation "
                          f"vectors; got {len(train.vectors)} and {len(val.vectors)}")
    k = settings.k
    val_scores, val_neighbors = retrieval_scores(val, train, k=k, backend=settings.backend)
    metrics = {f"{name}_val": value for name, value in val_scores.items()}

    n_train = min(settings.train_queries, len(train.vectors))
    rows = np.sort(_rng(settings.seed, 1).choice(len(train.vectors), size=n_train, replace=False))
    sample = Embeddings(train.image_ids[rows], train.labels[rows], train.vectors[rows])
    train_scores, _ = retrieval_scores(sample, train, k=k, backend=settings.backend, exclude=rows)
    metrics.update({f"{name}_train": value for name, value in train_scores.items()})

    layout = ClassLayout.from_labels(val.labels)
    rng = _rng(settings.seed, 2)
    q = rng.integers(0, len(val.labels), settings.triplets)
    q = q[layout.count[val.labels[q]] > 1]
    p = uniform_positives(layout, q, rng)
    n = uniform_negatives(layout, q, rng)
    metrics["triplet_precision_val"] = triplet_precision(val.vectors[q], val.vectors[p], val.vectors[n])

    per_class = per_class_precision(val_neighbors, val.labels, k, database_labels=train.labels)
    per_class = per_class.rename(columns={"precision_at_k": f"precision_at_{k}"})

    fq = figure_queries(val, settings.figure_queries, settings.seed)
    frames = []
    for kind, farthest in (("nearest", False), ("farthest", True)):
        dist, idx = knn_search(val.vectors[fq], train.vectors, settings.figure_k, farthest=farthest,
                               backend=settings.backend)
        frames.append(pd.DataFrame({
            "query_id": np.repeat(val.image_ids[fq], settings.figure_k),
            "kind": kind,
            "rank": np.tile(np.arange(settings.figure_k), len(fq)),
            "image_id": train.image_ids[idx.reshape(-1)],
            "distance": dist.reshape(-1),
        }))
    metrics = {k_: float(v) for k_, v in metrics.items()}
    metrics.update(query_counts("val", val.labels, train.labels))
    metrics.update(query_counts("train", sample.labels, train.labels, self_excluded=True))
    return metrics, per_class, pd.concat(frames, ignore_index=True)
