"""The course protocol: positive uniform from the query's class (never the query
itself), negative uniform over the images of all other classes.

Both draws are single vectorised ``rng.integers`` calls over the whole query
array, so the mined strategies reuse them (pool candidates, fallbacks, the
uniform share of ``mixed``) and the evaluation draws its validation triplets
with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from pipeline.errors import ConfigError
from pipeline.sampling.base import ClassMembers, SamplingContext, TripletBlock, register


def uniform_positives(classes: ClassMembers, queries: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A uniform same-class partner for each query, excluding the query itself (one draw per query)."""
    y = classes.labels[queries]
    n_same = classes.count[y]
    if np.any(n_same < 2):
        bad = int(y[np.argmax(n_same < 2)])
        raise ConfigError(
            f"class with label {bad} has a single training image, so no positive exists; "
            "every class needs at least 2 training images"
        )
    r = rng.integers(0, n_same - 1)
    # Draw among the other n-1 members by skipping over the query's own rank.
    r = r + (r >= classes.rank[queries])
    return classes.order[classes.start[y] + r]


def uniform_negatives(classes: ClassMembers, queries: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An image drawn uniformly from all classes other than the query's (one draw per query)."""
    y = classes.labels[queries]
    n_other = classes.labels.size - classes.count[y]
    if np.any(n_other < 1):
        raise ConfigError("the training split has a single class; triplets need at least 2 classes")
    j = rng.integers(0, n_other)
    # Positions in label-sorted order, skipping the query class's contiguous range.
    j = j + np.where(j >= classes.start[y], classes.count[y], 0)
    return classes.order[j]


@register("uniform")
@dataclass(frozen=True)
class UniformStrategy:
    """Uniform positive and negative: the course protocol (positives drawn first, then negatives)."""

    name: str = field(default="uniform", init=False)
    needs_embeddings: bool = field(default=False, init=False)
    scope: Literal["class"] = field(default="class", init=False)

    def reads(self) -> frozenset[str]:
        """Only how many rows each query gets."""
        return frozenset({"triplets_per_query"})

    def sample(self, ctx: SamplingContext, queries: np.ndarray, rng: np.random.Generator) -> TripletBlock:
        """Uniform rows for ``queries``; no distances (the strategy reads no embeddings)."""
        pos = uniform_positives(ctx.classes, queries, rng)
        neg = uniform_negatives(ctx.classes, queries, rng)
        return TripletBlock(
            queries=queries,
            positives=pos,
            negatives=neg,
            strategy=np.full(queries.size, self.name, dtype=object),
        )
