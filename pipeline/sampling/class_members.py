"""Training images grouped by class, so strategies draw within or across classes with array ops."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
