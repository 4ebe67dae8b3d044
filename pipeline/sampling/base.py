"""The interface every triplet-sampling strategy implements.

A strategy receives the training labels (and, for mined strategies, the previous
epoch's embeddings) plus the query positions of one class, and returns positives
and negatives for them as arrays. The driver in :mod:`pipeline.sampling.driver`
groups classes into blocks for dask, calls the strategy once per class with that
class's own RNG (:func:`pipeline.seeds.class_rng`, ``[seed, epoch, label]``) and
assembles the Parquet-ready table, so strategies never deal with ordering,
seeding or I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pipeline.sampling.class_members import ClassMembers


@dataclass(frozen=True)
class SamplingContext:
    """Everything a strategy may read. Positions index ``labels``/``embeddings``."""

    classes: ClassMembers
    epoch: int
    seed: int
    margin: float = 1.0
    embeddings: np.ndarray | None = None

    @property
    def labels(self) -> np.ndarray:
        """The label of every training position."""
        return self.classes.labels


@dataclass(frozen=True)
class TripletBlock:
    """The rows a strategy chose: positions into the training set, aligned with ``queries``.

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
    """A pluggable sampling rule; register its factory with :func:`~pipeline.sampling.registry.register`."""

    name: str
    needs_embeddings: bool

    def sample(
        self, ctx: SamplingContext, queries: np.ndarray, rng: np.random.Generator
    ) -> TripletBlock:
        """Choose a positive and a negative for each query position (the driver passes one class per call)."""
        ...
