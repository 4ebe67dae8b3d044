"""Batch-structured triplet lists: whole training batches chosen offline.

An epoch's list is a sequence of batches. ``TrainEpoch`` forwards each distinct
image of a batch once and computes the loss over the batch's triplets, so many
triplets share every forward pass (a plain list spends three forwards on each
triplet). What offline mining adds over an in-batch miner is the choice of the
batch itself, from the previous epoch's embeddings of the *whole* training set:

* **Classes.** ``batch_classes`` (P) classes per batch. With fewer classes than
  P every batch holds them all; otherwise the first class comes from a seeded
  cycle and the others are drawn with probability proportional to how often the
  previous epoch confused them with it (neighbour counts), so confused classes
  meet in one batch.
* **Seeds.** ``batch_seeds`` (K) images of each chosen class, walking a seeded
  per-class permutation, so every image is a seed equally often.
* **Length.** Batches are added until the epoch forwards ``image_passes`` times
  as many images as the training set holds: the budget, whatever the batches'
  size (a hard negative that is already in its batch adds nothing).
* **Hard negatives.** For a ``hard_share`` of the seeds, one of its
  ``hard_top`` nearest other-class images (exact kNN over all training
  embeddings, drawn at random among them) joins the batch: negatives an in-batch
  miner could only meet by chance.
* **Triplets.** Every batch image with an in-batch positive is an anchor of
  ``triplets_per_anchor`` rows: in-batch (positive, negative) pairs chosen by
  ``triplet_rule`` against the previous epoch's distances: ``active`` (the
  hinge is positive), ``semihard`` (``D(a,p) < D(a,n) < D(a,p) + margin``),
  ``hard`` (``D(a,n) < D(a,p)``), or ``uniform``. Where too few pairs obey the
  rule, uniform pairs fill the rest (the ``strategy`` column says which).

Without embeddings (the first epoch when ``mine_first_epoch`` is off) batches are
plain P x K and the pairs uniform. Every draw comes from RNGs seeded by
``(seed, epoch, stream)``, so a list is a pure function of its inputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.errors import ConfigError
from pipeline.knn import knn_search
from pipeline.sampling.base import SamplingContext
from pipeline.sampling.driver import BATCHED_SCHEMA, triplet_table  # noqa: F401  (BATCHED_SCHEMA: documented here)
from pipeline.sampling.registry import register

RULES = ("active", "semihard", "hard", "uniform")
# Seed streams of a batched list: [seed, epoch, stream].
_COMPOSE_STREAM = 1 << 29
_TRIPLET_STREAM = (1 << 29) + 1
# Random (positive, negative) candidates examined per listed triplet and anchor.
_CANDIDATES_PER_TRIPLET = 8



@dataclass(frozen=True)
class BatchOptions:
    """Settings of a batch-structured list (see the module docstring)."""

    batch_classes: int = 10
    batch_seeds: int = 10
    image_passes: int = 7
    hard_share: float = 1.0
    hard_top: int = 10
    triplets_per_anchor: int = 16
    triplet_rule: str = "active"

    def __post_init__(self) -> None:
        for name in ("image_passes", "hard_top", "triplets_per_anchor"):
            if getattr(self, name) < 1:
                raise ConfigError(f"[TripletList] {name} = {getattr(self, name)}; it must be at least 1")
        if self.batch_seeds < 2:
            raise ConfigError(f"[TripletList] batch_seeds = {self.batch_seeds}; an anchor needs a positive, "
                              "so use at least 2 seeds per class")
        if self.batch_classes < 2:
            raise ConfigError(f"[TripletList] batch_classes = {self.batch_classes}; an anchor needs a negative, "
                              "so use at least 2 classes per batch")
        if not 0.0 <= self.hard_share <= 1.0:
            raise ConfigError(f"[TripletList] hard_share = {self.hard_share}; use a value in [0, 1]")
        if self.triplet_rule not in RULES:
            raise ConfigError(f"[TripletList] triplet_rule = {self.triplet_rule!r}; use one of {', '.join(RULES)}")

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> "BatchOptions":
        """The options among ``settings`` (other keys are ignored); strings are converted."""
        out = {}
        for name, default in asdict(cls()).items():
            if name in settings:
                try:
                    out[name] = type(default)(settings[name])
                except (TypeError, ValueError):
                    raise ConfigError(f"[TripletList] {name} = {settings[name]!r} is not a "
                                      f"{type(default).__name__}") from None
        return cls(**out)


def _rng(ctx: SamplingContext, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([ctx.seed, ctx.epoch, stream]))


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

    def __init__(self, ctx: SamplingContext, rng: np.random.Generator) -> None:
        self.rng = rng
        self.perm = [rng.permutation(ctx.layout.members(c)) for c in range(ctx.layout.n_classes)]
        self.next = [0] * ctx.layout.n_classes

    def take(self, label: int, k: int) -> np.ndarray:
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
    layout = ctx.layout
    usable = np.flatnonzero(layout.count >= 2)  # a class needs two images to give an anchor a positive
    if usable.size < 2:
        raise ConfigError("a batch-structured list needs at least 2 classes with 2 or more training images")
    rng = _rng(ctx, _COMPOSE_STREAM)
    hard = confusion = None
    if ctx.embeddings is not None:
        hard, confusion = _neighbours(np.asarray(ctx.embeddings, dtype=np.float32), layout.labels,
                                      options.hard_top)
    p = min(options.batch_classes, usable.size)
    budget = options.image_passes * int(layout.count[usable].sum())
    cycle = _SeedCycle(ctx, rng)
    batches: list[np.ndarray] = []
    forwarded = 0
    first_classes: list[int] = []
    while forwarded < budget:
        if not first_classes:  # every usable class leads a batch once per round, in a seeded order
            first_classes = rng.permutation(usable).tolist()
        first = first_classes.pop()
        classes = _batch_classes(int(first), usable, p, confusion, rng)
        seeds = np.concatenate([cycle.take(int(c), options.batch_seeds) for c in classes])
        members = [seeds]
        # Drawn whether used or not, so the seeds do not depend on the hard-negative settings.
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
    if p >= usable.size:
        return usable
    others = usable[usable != first]
    weights = np.ones(others.size)
    if confusion is not None:
        # Confused classes are likelier companions; the +1 keeps every class possible.
        weights = confusion[first, others] + confusion[others, first] + 1.0
    rest = rng.choice(others, size=p - 1, replace=False, p=weights / weights.sum())
    return np.concatenate([[first], rest])


def _pair_rule(rule: str, d_ap: np.ndarray, d_an: np.ndarray, margin: float) -> np.ndarray:
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
    """One epoch's batch-structured list as an Arrow table (schema :data:`BATCHED_SCHEMA`)."""
    batches = compose_batches(ctx, options)
    rng = _rng(ctx, _TRIPLET_STREAM)
    labels = ctx.layout.labels
    emb = None if ctx.embeddings is None else np.asarray(ctx.embeddings, dtype=np.float32)
    parts = [list_triplets(b, labels, emb, options, ctx.margin, rng) for b in batches]
    sizes = [len(part[0]) for part in parts]
    q, p, n, ok, d_ap, d_an = (np.concatenate([part[i] for part in parts]) for i in range(6))
    rule = options.triplet_rule if emb is not None else "uniform"
    names = np.where(ok, rule, f"{rule}-uniform") if rule != "uniform" else np.full(q.size, "uniform")
    batch = np.repeat(np.arange(len(batches), dtype=np.int32), sizes)
    return triplet_table(ctx, image_ids, q, p, n, names, d_ap, d_an, batch=batch)


@dataclass(frozen=True)
class BatchedStrategy:
    """The ``batched`` strategy: it builds the whole table (batches span classes), so
    the driver hands it the epoch instead of class blocks."""

    options: BatchOptions
    name: str = "batched"
    needs_embeddings: bool = True

    def sample_table(self, ctx: SamplingContext, image_ids: np.ndarray) -> pa.Table:
        return sample_batched_list(ctx, self.options, image_ids)


@register("batched")
def batched(batch_classes: int = 10, batch_seeds: int = 10, image_passes: int = 7, hard_share: float = 1.0,
            hard_top: int = 10, triplets_per_anchor: int = 16, triplet_rule: str = "active") -> BatchedStrategy:
    return BatchedStrategy(BatchOptions.from_settings(dict(
        batch_classes=batch_classes, batch_seeds=batch_seeds, image_passes=image_passes, hard_share=hard_share,
        hard_top=hard_top, triplets_per_anchor=triplets_per_anchor, triplet_rule=triplet_rule)))
