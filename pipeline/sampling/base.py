"""The interface every triplet-sampling strategy implements.

A strategy receives the training labels (and, for mined strategies, the previous
epoch's embeddings) plus one block of query positions, and returns positives and
negatives for that block as arrays. The driver in :mod:`pipeline.sampling.driver`
splits the queries into blocks of classes, seeds one RNG per block from
``(seed, epoch, block)``, runs the blocks in parallel with dask and assembles the
Parquet-ready table, so strategies never deal with ordering, seeding or I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

import numpy as np


@dataclass(frozen=True)
class ClassLayout:
    """Training images grouped by class, for vectorised within-class draws.

    ``order`` lists image positions sorted by label (stable), so the positions of
    class ``c`` are ``order[start[c]:start[c] + count[c]]``; ``rank[i]`` is the
    place of position ``i`` inside its class's slice.
    """

    labels: np.ndarray
    order: np.ndarray
    start: np.ndarray
    count: np.ndarray
    rank: np.ndarray

    @classmethod
    def from_labels(cls, labels: np.ndarray) -> "ClassLayout":
        labels = np.asarray(labels, dtype=np.int64)
        n_classes = int(labels.max()) + 1 if labels.size else 0
        order = np.argsort(labels, kind="stable")
        count = np.bincount(labels, minlength=n_classes).astype(np.int64)
        start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size) - start[labels[order]]
        return cls(labels=labels, order=order, start=start, count=count, rank=rank)

    @property
    def n_classes(self) -> int:
        return int(self.count.size)

    def members(self, label: int) -> np.ndarray:
        """Positions of the images of class ``label``."""
        s = int(self.start[label])
        return self.order[s : s + int(self.count[label])]


@dataclass(frozen=True)
class SamplingContext:
    """Everything a strategy may read. Positions index ``labels``/``embeddings``."""

    layout: ClassLayout
    epoch: int
    seed: int
    margin: float = 1.0
    embeddings: np.ndarray | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        return self.layout.labels


@dataclass(frozen=True)
class TripletBlock:
    """One block's result: positions into the training set, aligned with ``queries``.

    ``d_qp``/``d_qn`` are the distances at mining time (NaN when the strategy
    used no embeddings); ``strategy`` names, per row, the rule that chose it (a
    mixed strategy records which rows were mined and which uniform).
    """

    queries: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray
    strategy: np.ndarray
    d_qp: np.ndarray | None = None
    d_qn: np.ndarray | None = None


class TripletStrategy(Protocol):
    """A pluggable sampling rule; register instances with :func:`register`."""

    name: str
    needs_embeddings: bool

    def sample(
        self, ctx: SamplingContext, queries: np.ndarray, rng: np.random.Generator
    ) -> TripletBlock:
        """Choose a positive and a negative for each query position."""
        ...
