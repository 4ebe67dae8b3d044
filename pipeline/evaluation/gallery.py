"""The gallery validation searches: the database vectors and labels, and how they are
searched (exact ``flat`` kNN, or an approximate ``ivf`` index for large galleries).

One :class:`Gallery` serves every block of queries of an epoch's validation (the
validation queries and the training sample search the same training vectors), and
it is what a dask cluster receives once (:mod:`pipeline.evaluation.on_cluster`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import ConfigError
from pipeline.knn import knn_search
from pipeline.knn.ivf import IvfIndex, build_ivf
from pipeline.seeds import ivf_training_seed

INDEXES = ("flat", "ivf")


@dataclass(frozen=True)
class Gallery:
    """Database ``vectors`` ``(N, d)`` and ``labels`` ``(N,)``; ``ivf`` (with ``nprobe``) when the
    search is approximate, else exact :func:`pipeline.knn.knn_search` with ``backend``;
    ``block_bytes``: the working memory of one block of queries searched against it (0: the
    default, :data:`pipeline.evaluation.bounded.BLOCK_BYTES`)."""

    vectors: np.ndarray
    labels: np.ndarray
    backend: str = "auto"
    ivf: IvfIndex | None = None
    nprobe: int = 1
    block_bytes: int = 0


def build_gallery(vectors: np.ndarray, labels: np.ndarray, *, backend: str = "auto", index: str = "flat",
                  nlist: int = 1, nprobe: int = 1, seed: int = 0, block_bytes: int = 0) -> Gallery:
    """The gallery of ``index`` (``flat`` or ``ivf``) over ``vectors``: for ``ivf``, an
    ``IndexIVFFlat`` of ``nlist`` lists trained with the ``[run] seed``'s ivf stream
    (:func:`pipeline.seeds.ivf_training_seed`), searched with ``nprobe`` lists;
    ``block_bytes`` as in :class:`Gallery`.

    Raises :class:`ConfigError` naming the ``[ValidateEpoch]`` setting at fault: an
    unknown index, ``nprobe`` above ``nlist``, ``nlist`` above the database rows, faiss missing.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    labels = np.asarray(labels)
    if index not in INDEXES:
        raise ConfigError(f"[ValidateEpoch] index = {index!r}; use one of {', '.join(INDEXES)}")
    if index == "flat":
        return Gallery(vectors, labels, backend, block_bytes=block_bytes)
    if not 1 <= nprobe <= nlist:
        raise ConfigError(f"[ValidateEpoch] nprobe = {nprobe} with nlist = {nlist}; a query probes between 1 "
                          "and nlist lists: lower nprobe or raise nlist")
    return Gallery(vectors, labels, backend, build_ivf(vectors, nlist, ivf_training_seed(seed)), nprobe, block_bytes)


def recall_against_exact(queries: np.ndarray, gallery: Gallery, approximate: np.ndarray) -> float:
    """Recall@k of an approximate search: the mean share of each query's exact k nearest gallery
    rows (:func:`pipeline.knn.knn_search`, k = ``approximate.shape[1]``) among the k rows
    ``approximate`` found for it. 1.0 means the approximate search missed nothing."""
    k = approximate.shape[1]
    if len(queries) == 0 or k == 0:
        return float("nan")
    _, exact = knn_search(queries, gallery.vectors, k, backend=gallery.backend)
    found = sum(np.intersect1d(a, e, assume_unique=True).size for a, e in zip(approximate, exact))
    return found / (len(queries) * k)
