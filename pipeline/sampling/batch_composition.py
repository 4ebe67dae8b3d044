"""Which images form each step of a batch-structured list.

What offline mining adds over an in-batch miner is the choice of the batch
itself, from the previous epoch's embeddings of the *whole* training set:

* **Classes.** ``batch_classes`` (P) classes per batch. With fewer usable
  classes (those with 2 or more images) than P every batch holds them all;
  otherwise the first class comes from a seeded cycle (every usable class leads
  once per round) and the others are drawn with probability proportional to how
  often the previous epoch confused them with it (neighbour counts, plus one),
  so confused classes meet in one batch.
* **Seeds.** ``batch_seeds`` (K) images of each chosen class, walking a seeded
  per-class permutation, so every image is a seed equally often.
* **Length.** Batches are added until the epoch forwards ``image_passes`` times
  as many images as the usable classes hold: the budget, whatever the batches'
  size (a hard negative that is already in its batch adds nothing).
* **Hard negatives.** For a ``hard_share`` of the seeds, one of its
  ``hard_top`` nearest other-class images (exact kNN over all training
  embeddings, drawn at random among them) joins the batch: negatives an in-batch
  miner could only meet by chance.

Without embeddings batches are plain P x K (confusion weights and hard
negatives need them). Every draw comes from one RNG,
:func:`pipeline.seeds.batch_compose_rng` (``[seed, epoch, 2**29]``), and the
hard-negative draws are made whether used or not, so the seeds of a batch do
not depend on ``hard_share``.
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import ConfigError
from pipeline.knn import knn_search
from pipeline.sampling.base import SamplingContext
from pipeline.sampling.batch_options import BatchOptions
from pipeline.sampling.class_members import ClassMembers
from pipeline.seeds import batch_compose_rng


def _neighbours(emb: np.ndarray, labels: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """``(hard, confusion)``: each image's ``top`` nearest other-class images (-1 where fewer
    exist among its neighbours) and the class x class count of neighbours of other classes."""
    n = len(labels)
    k = min(n - 1, max(4 * top, 32))
    _, idx = knn_search(emb, emb, k, exclude=np.arange(n))
    other = labels[idx] != labels[:, None]
    # The first `top` other-class neighbours of each row, in distance order.
    rank = np.cumsum(other, axis=1) - 1
    hard = np.full((n, top), -1, dtype=np.int64)
    rows, cols = np.nonzero(other & (rank < top))
    hard[rows, rank[rows, cols]] = idx[rows, cols]
    n_classes = int(labels.max()) + 1
    confusion = np.zeros((n_classes, n_classes), dtype=np.float64)
    np.add.at(confusion, (np.repeat(labels, k)[other.ravel()], labels[idx][other]), 1.0)
    return hard, confusion


class _SeedCycle:
    """Each class's positions in a seeded order, handed out K at a time, reshuffled when used up."""

    def __init__(self, classes: ClassMembers, rng: np.random.Generator) -> None:
        self.rng = rng
        self.perm = [rng.permutation(classes.members(c)) for c in range(classes.n_classes)]
        self.next = [0] * classes.n_classes

    def take(self, label: int, k: int) -> np.ndarray:
        """The next ``k`` seeds of class ``label`` (all its images if it has fewer), no image twice."""
        members = self.perm[label]
        k = min(k, len(members))
        out = members[self.next[label] : self.next[label] + k]
        self.next[label] += k
        if len(out) < k:
            # A new pass; the images just taken go last in it, so no batch holds one twice.
            fresh = self.rng.permutation(members)
            fresh = np.concatenate([fresh[~np.isin(fresh, out)], fresh[np.isin(fresh, out)]])
            self.perm[label] = fresh
            self.next[label] = k - len(out)
            out = np.concatenate([out, fresh[: self.next[label]]])
        return out


def compose_batches(ctx: SamplingContext, options: BatchOptions) -> list[np.ndarray]:
    """The epoch's batches as sorted arrays of training positions (see the module docstring)."""
    classes = ctx.classes
    usable = np.flatnonzero(classes.count >= 2)  # a class needs two images to give an anchor a positive
    if usable.size < 2:
        raise ConfigError("a batch-structured list needs at least 2 classes with 2 or more training images")
    rng = batch_compose_rng(ctx.seed, ctx.epoch)
    hard = confusion = None
    if ctx.embeddings is not None:
        hard, confusion = _neighbours(np.asarray(ctx.embeddings, dtype=np.float32), classes.labels,
                                      options.hard_top)
    p = min(options.batch_classes, usable.size)
    budget = options.image_passes * int(classes.count[usable].sum())
    cycle = _SeedCycle(classes, rng)
    batches: list[np.ndarray] = []
    forwarded = 0
    first_classes: list[int] = []
    while forwarded < budget:
        if not first_classes:  # every usable class leads a batch once per round, in a seeded order
            first_classes = rng.permutation(usable).tolist()
        first = first_classes.pop()
        chosen = _batch_classes(int(first), usable, p, confusion, rng)
        seeds = np.concatenate([cycle.take(int(c), options.batch_seeds) for c in chosen])
        members = [seeds]
        # Drawn whether used or not, so the seeds do not depend on hard_share.
        bring = rng.random(seeds.size) < options.hard_share
        pick = rng.integers(0, options.hard_top, seeds.size)
        if hard is not None:
            picks = hard[seeds[bring], pick[bring]]
            members.append(picks[picks >= 0])
        batches.append(np.unique(np.concatenate(members)))
        forwarded += batches[-1].size
    return batches


def _batch_classes(first: int, usable: np.ndarray, p: int, confusion: np.ndarray | None,
                   rng: np.random.Generator) -> np.ndarray:
    """``first`` and ``p - 1`` other usable classes (all of them when there are no more than ``p``)."""
    if p >= usable.size:
        return usable
    others = usable[usable != first]
    weights = np.ones(others.size)
    if confusion is not None:
        # Confused classes are likelier companions; the +1 keeps every class possible.
        weights = confusion[first, others] + confusion[others, first] + 1.0
    rest = rng.choice(others, size=p - 1, replace=False, p=weights / weights.sum())
    return np.concatenate([[first], rest])
