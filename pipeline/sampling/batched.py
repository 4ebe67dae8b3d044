"""Batch-structured triplet lists (strategy ``batched``): whole training batches chosen offline.

An epoch's list is a sequence of batches (schema
:data:`~pipeline.sampling.driver.BATCHED_SCHEMA`). ``TrainEpoch`` forwards each
distinct image of a batch once and computes the loss over the batch's
triplets, so many triplets share every forward pass (a plain list spends three
forwards on each triplet).

What offline mining adds over an in-batch miner is the choice of the batch
itself, from the previous epoch's embeddings of the *whole* training set
(:func:`compose_batches`):

* **Classes.** ``batch_classes`` (P) classes per batch. With fewer usable
  classes (those with 2 or more images) than P every batch holds them all;
  otherwise the first class comes from a seeded cycle (every usable class leads
  once per round) and the others are drawn with probability proportional to how
  often the previous epoch confused them with it (neighbour counts, plus one),
  so confused classes meet in one batch.
* **Seeds.** ``batch_seeds`` (K) images of each chosen class, walking a seeded
  per-class permutation, so every image is a seed equally often.
* **Length.** Batches are added until the epoch forwards ``image_passes`` times
  as many images as the usable classes hold, plus the images the list left out
  (``SamplingContext.left_out``): the budget, whatever the batches' size (a hard
  negative that is already in its batch adds nothing).
* **Hard negatives.** For a ``hard_share`` of the seeds, one of its
  ``hard_top`` nearest other-class images (exact kNN over all training
  embeddings, drawn at random among them) joins the batch: negatives an in-batch
  miner could only meet by chance.

Then each batch's triplets are listed (:func:`list_triplets`):

* **Triplets.** Every batch image with an in-batch positive is an anchor of
  ``triplets_per_anchor`` rows: in-batch (positive, negative) pairs chosen by
  ``triplet_rule`` against the previous epoch's distances: ``active`` (the
  hinge is positive), ``semihard`` (``D(a,p) < D(a,n) < D(a,p) + margin``),
  ``hard`` (``D(a,n) < D(a,p)``), or ``uniform``. Where too few pairs obey the
  rule, uniform pairs fill the rest (the ``strategy`` column says which:
  ``<rule>`` or ``<rule>-uniform``).

Without embeddings (the first epoch when ``mine_first_epoch`` is off) batches are
plain P x K (confusion weights and hard negatives need embeddings) and the pairs
uniform. Batches draw from one RNG, :func:`pipeline.seeds.batch_compose_rng`
(``[seed, epoch, 2**29]``), and the hard-negative draws are made whether used or
not, so the seeds of a batch do not depend on ``hard_share``. The triplets draw
from :func:`pipeline.seeds.batch_triplet_rng` (``[seed, epoch, 2**29 + 1]``),
batch after batch, so a list is a pure function of its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa

from pipeline.errors import ConfigError
from pipeline.knn import knn_search
from pipeline.sampling.base import ClassMembers, SamplingContext, register
from pipeline.sampling.driver import triplet_table
from pipeline.sampling.settings import BATCH_SETTINGS, BatchOptions
from pipeline.seeds import batch_compose_rng, batch_triplet_rng


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
    budget = options.image_passes * (int(classes.count[usable].sum()) + ctx.left_out)
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


# Random (positive, negative) candidates examined per listed triplet and anchor.
_CANDIDATES_PER_TRIPLET = 8


def _pair_rule(rule: str, d_ap: np.ndarray, d_an: np.ndarray, margin: float) -> np.ndarray:
    """Which candidate pairs obey ``rule`` (see the module docstring)."""
    if rule == "active":
        return d_an < d_ap + margin
    if rule == "semihard":
        return (d_ap < d_an) & (d_an < d_ap + margin)
    if rule == "hard":
        return d_an < d_ap
    return np.ones(d_ap.shape, dtype=bool)


def list_triplets(batch: np.ndarray, labels: np.ndarray, emb: np.ndarray | None, options: BatchOptions,
                  margin: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """``(anchor, positive, negative, ruled, d_ap, d_an)`` rows of one batch (positions into the training set).

    For each anchor, ``triplets_per_anchor`` rows: the first pairs that obey the
    rule among ``_CANDIDATES_PER_TRIPLET`` times as many random in-batch pairs,
    then (``ruled`` False) random pairs for whatever is missing.
    """
    y = labels[batch]
    same = y[:, None] == y[None, :]
    np.fill_diagonal(same, False)
    n_pos = same.sum(axis=1)
    anchors = np.flatnonzero(n_pos > 0)
    t = options.triplets_per_anchor
    m = t * (_CANDIDATES_PER_TRIPLET if (emb is not None and options.triplet_rule != "uniform") else 1)
    # Random in-batch positives and negatives per anchor, drawn by rank within each anchor's sets.
    pos_lists = np.argsort(~same[anchors], axis=1, kind="stable")  # positives first, in batch order
    neg_mask = y[anchors][:, None] != y[None, :]
    neg_lists = np.argsort(~neg_mask, axis=1, kind="stable")
    pr = (rng.random((anchors.size, m)) * n_pos[anchors][:, None]).astype(np.int64)
    nr = (rng.random((anchors.size, m)) * neg_mask.sum(axis=1)[:, None]).astype(np.int64)
    pos = np.take_along_axis(pos_lists, pr, axis=1)
    neg = np.take_along_axis(neg_lists, nr, axis=1)
    anc = np.repeat(anchors[:, None], m, axis=1)
    if emb is None:
        d_ap = d_an = np.full(pos.shape, np.nan, dtype=np.float32)
        ok = np.ones(pos.shape, dtype=bool)
    else:
        e = np.asarray(emb[batch], dtype=np.float32)
        d_ap = np.linalg.norm(e[anc] - e[pos], axis=-1)
        d_an = np.linalg.norm(e[anc] - e[neg], axis=-1)
        ok = _pair_rule(options.triplet_rule, d_ap, d_an, margin)
    # Per anchor: ruled candidates first (in draw order), then the others; keep t.
    order = np.argsort(~ok, axis=1, kind="stable")[:, :t]
    pick = lambda a: np.take_along_axis(a, order, axis=1).ravel()  # noqa: E731
    return (batch[pick(anc)], batch[pick(pos)], batch[pick(neg)], pick(ok), pick(d_ap), pick(d_an))


def sample_batched_list(ctx: SamplingContext, options: BatchOptions, image_ids: np.ndarray) -> pa.Table:
    """One epoch's batch-structured list as an Arrow table (schema ``BATCHED_SCHEMA``)."""
    batches = compose_batches(ctx, options)
    rng = batch_triplet_rng(ctx.seed, ctx.epoch)
    labels = ctx.classes.labels
    emb = None if ctx.embeddings is None else np.asarray(ctx.embeddings, dtype=np.float32)
    parts = [list_triplets(b, labels, emb, options, ctx.margin, rng) for b in batches]
    sizes = [len(part[0]) for part in parts]
    q, p, n, ok, d_ap, d_an = (np.concatenate([part[i] for part in parts]) for i in range(6))
    rule = options.triplet_rule if emb is not None else "uniform"
    names = np.where(ok, rule, f"{rule}-uniform") if rule != "uniform" else np.full(q.size, "uniform")
    batch = np.repeat(np.arange(len(batches), dtype=np.int32), sizes)
    return triplet_table(ctx, image_ids, q, p, n, names, d_ap, d_an, batch=batch)


@register("batched")
@dataclass(frozen=True)
class BatchedStrategy(BatchOptions):
    """The ``batched`` strategy: it builds the whole table (batches span classes), so
    the driver hands it the epoch instead of class blocks."""

    name: str = field(default="batched", init=False)
    needs_embeddings: bool = field(default=True, init=False)
    scope: Literal["epoch"] = field(default="epoch", init=False)

    def reads(self) -> frozenset[str]:
        """Its batch options, and whether the first epoch mines (else plain P x K batches)."""
        return BATCH_SETTINGS | {"mine_first_epoch"}

    def sample_table(self, ctx: SamplingContext, image_ids: np.ndarray) -> pa.Table:
        """The epoch's batch-structured list (its own settings are the options)."""
        return sample_batched_list(ctx, self, image_ids)
