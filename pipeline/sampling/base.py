"""What every triplet-sampling strategy sees and implements, and the registry that names them.

A strategy is one of two kinds, told apart by its ``scope``:

* :class:`ClassStrategy` (``scope == "class"``: ``uniform``, ``semihard``,
  ``hard``, ``mixed``) receives the query positions of one class and returns
  positives and negatives for them as arrays. The driver
  (:mod:`pipeline.sampling.driver`) groups classes into blocks for dask, calls
  the strategy once per class with that class's own RNG
  (:func:`pipeline.seeds.class_rng`, ``[seed, epoch, label]``) and assembles the
  Parquet-ready table, so these strategies never deal with ordering, seeding or I/O.
* :class:`EpochStrategy` (``scope == "epoch"``: ``batched``) builds the epoch's
  whole table at once, in the calling process, because its batches span classes.

Strategies register a factory under their user-facing name
(``@register("uniform")``); :func:`get_strategy` builds one from the
``[TripletList]`` options.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal, Protocol, Union

import numpy as np

from pipeline.settings import Registry

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class ClassMembers:
    """The training positions of every class, as slices of one label-sorted array.

    ``order`` lists image positions sorted by label (stable), so the positions of
    class ``c`` are ``order[start[c]:start[c] + count[c]]``; ``rank[i]`` is the
    place of position ``i`` inside its class's slice. Drawing "a member of class
    ``c`` other than ``i``" is then one integer draw plus an offset, for a whole
    array of queries at once.
    """

    labels: np.ndarray
    order: np.ndarray
    start: np.ndarray
    count: np.ndarray
    rank: np.ndarray

    @classmethod
    def from_labels(cls, labels: np.ndarray) -> "ClassMembers":
        """Group positions ``0..len(labels)-1`` by their integer label (labels index classes from 0)."""
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
        """Number of classes, empty ones included (one past the largest label)."""
        return int(self.count.size)

    def members(self, label: int) -> np.ndarray:
        """Positions of the images of class ``label``."""
        s = int(self.start[label])
        return self.order[s : s + int(self.count[label])]


@dataclass(frozen=True)
class SamplingContext:
    """Everything a strategy may read. Positions index ``labels``/``embeddings``."""

    classes: ClassMembers
    epoch: int
    seed: int
    margin: float = 1.0
    embeddings: np.ndarray | None = None
    # Training images left out of this epoch's positions (the audit's suspects under
    # ``exclude``). A batched epoch still forwards ``image_passes`` times the whole
    # split: an epoch costs the same with or without them, and so does a comparison
    # at equal images per epoch.
    left_out: int = 0

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


class ClassStrategy(Protocol):
    """A rule applied to one class's queries at a time; the driver spreads the classes over dask."""

    @property
    def name(self) -> str: ...

    @property
    def needs_embeddings(self) -> bool:
        """Whether it reads the previous epoch's embeddings (``ctx.embeddings``)."""
        ...

    @property
    def scope(self) -> Literal["class"]: ...

    def reads(self) -> frozenset[str]:
        """The ``[TripletList]`` settings it reads, besides ``strategy`` and the run-only knobs; the
        others must keep their defaults (``ListSettings.problems``)."""
        ...

    def sample(self, ctx: SamplingContext, queries: np.ndarray, rng: np.random.Generator) -> TripletBlock:
        """Choose a positive and a negative for each query position (the driver passes one class per call)."""
        ...


class EpochStrategy(Protocol):
    """A rule that builds the epoch's whole list at once (its batches span classes), in the calling process."""

    @property
    def name(self) -> str: ...

    @property
    def needs_embeddings(self) -> bool: ...

    @property
    def scope(self) -> Literal["epoch"]: ...

    def reads(self) -> frozenset[str]: ...

    def sample_table(self, ctx: SamplingContext, image_ids: np.ndarray) -> pa.Table:
        """The epoch's list as an Arrow table (``image_ids[i]`` is training position ``i``'s dataset id)."""
        ...


TripletStrategy = Union[ClassStrategy, EpochStrategy]

STRATEGIES: Registry[Callable[..., TripletStrategy]] = Registry("triplet strategy", "[TripletList] strategy")
register = STRATEGIES.register


def available() -> list[str]:
    """Names of the registered strategies."""
    return list(STRATEGIES.names())


def get_strategy(name: str, **options: object) -> TripletStrategy:
    """Build the strategy registered as ``name``.

    ``options`` may hold every ``[TripletList]`` option; each strategy takes the
    ones its factory accepts, so one config section serves all strategies.
    """
    factory = STRATEGIES[name]
    accepted = inspect.signature(factory).parameters
    return factory(**{k: v for k, v in options.items() if k in accepted and k != "name"})
