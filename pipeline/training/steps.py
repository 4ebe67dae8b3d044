"""What one training step forwards, and which triplets its loss covers.

A plain triplet list is cut into steps of ``batch_size`` rows, and every row
forwards its own three images (the course protocol: 3B images per step, in
row order). A batch-structured list (with a ``batch`` column, see
:mod:`pipeline.sampling.batched`) gives one step per batch: each distinct image
of the batch is forwarded once and the triplets index into them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError
from pipeline.sampling.list_files import read_list


@dataclass(frozen=True)
class StepBatch:
    """One step: the image ids to forward (in order), their labels (-1 where
    unknown), and the listed triplets as positions into ``images``."""

    images: np.ndarray
    labels: np.ndarray
    anchors: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray

    @property
    def n_triplets(self) -> int:
        return int(self.anchors.size)


def triplet_steps(triplets: np.ndarray, batch_size: int) -> list[StepBatch]:
    """Steps of ``batch_size`` rows of a ``(T, 3)`` (query, positive, negative) id array.

    The images of a step are the rows flattened ``(q0, p0, n0, q1, ...)``, each
    row forwarded on its own, as the course's three-branch network does.
    """
    if batch_size < 1:
        raise ConfigError(f"[TrainEpoch] batch_size = {batch_size}; it must be at least 1")
    triplets = np.asarray(triplets, dtype=np.int64).reshape(-1, 3)
    steps = []
    for lo in range(0, len(triplets), batch_size):
        chunk = triplets[lo : lo + batch_size]
        base = np.arange(0, 3 * len(chunk), 3)
        steps.append(StepBatch(images=chunk.reshape(-1), labels=np.full(3 * len(chunk), -1, np.int64),
                               anchors=base, positives=base + 1, negatives=base + 2))
    return steps


def batch_steps(batch: np.ndarray, triplets: np.ndarray, query_labels: np.ndarray,
                negative_labels: np.ndarray) -> list[StepBatch]:
    """One step per batch number of a batch-structured list, in batch order.

    ``triplets`` is ``(T, 3)`` ids aligned with ``batch`` and the label columns;
    a positive has its query's label.
    """
    batch = np.asarray(batch, dtype=np.int64)
    triplets = np.asarray(triplets, dtype=np.int64).reshape(-1, 3)
    order = np.argsort(batch, kind="stable")
    bounds = np.flatnonzero(np.diff(batch[order])) + 1
    steps = []
    for rows in np.split(order, bounds) if len(order) else []:
        t = triplets[rows]
        images, local = np.unique(t, return_inverse=True)
        local = local.reshape(-1, 3)
        labels = np.full(images.size, -1, dtype=np.int64)
        labels[local[:, 0]] = query_labels[rows]
        labels[local[:, 1]] = query_labels[rows]
        labels[local[:, 2]] = negative_labels[rows]
        steps.append(StepBatch(images=images, labels=labels, anchors=local[:, 0], positives=local[:, 1],
                               negatives=local[:, 2]))
    return steps


def training_steps(triplet_dir: str | Path, batch_size: int) -> tuple[list[StepBatch], np.ndarray]:
    """The steps an epoch takes over its saved list, and the array that identifies them.

    A batch-structured list (with a ``batch`` column) gives one step per batch;
    a plain list, steps of ``batch_size`` rows. The second value (ids, plus batch
    numbers when present) fingerprints the list for partial checkpoints.
    """
    table, ids = read_list(triplet_dir)
    if "batch" not in table.column_names:
        return triplet_steps(ids, batch_size), ids
    batch = table["batch"].to_numpy()
    steps = batch_steps(batch, ids, table["query_label"].to_numpy(), table["negative_label"].to_numpy())
    return steps, np.column_stack([ids, batch])
