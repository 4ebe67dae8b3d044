"""Batch-structured triplet lists (strategy ``batched``): whole training batches chosen offline.

An epoch's list is a sequence of batches (schema
:data:`~pipeline.sampling.driver.BATCHED_SCHEMA`). ``TrainEpoch`` forwards each
distinct image of a batch once and computes the loss over the batch's
triplets, so many triplets share every forward pass (a plain list spends three
forwards on each triplet). Which images form a batch is
:mod:`pipeline.sampling.batch_composition`; this module lists their triplets:

* **Triplets.** Every batch image with an in-batch positive is an anchor of
  ``triplets_per_anchor`` rows: in-batch (positive, negative) pairs chosen by
  ``triplet_rule`` against the previous epoch's distances: ``active`` (the
  hinge is positive), ``semihard`` (``D(a,p) < D(a,n) < D(a,p) + margin``),
  ``hard`` (``D(a,n) < D(a,p)``), or ``uniform``. Where too few pairs obey the
  rule, uniform pairs fill the rest (the ``strategy`` column says which:
  ``<rule>`` or ``<rule>-uniform``).

Without embeddings (the first epoch when ``mine_first_epoch`` is off) batches are
plain P x K and the pairs uniform. The triplets draw from
:func:`pipeline.seeds.batch_triplet_rng` (``[seed, epoch, 2**29 + 1]``), batch
after batch, so a list is a pure function of its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from pipeline.sampling.base import SamplingContext
from pipeline.sampling.batch_composition import compose_batches
from pipeline.sampling.batch_options import BatchOptions
from pipeline.sampling.driver import triplet_table
from pipeline.sampling.registry import register
from pipeline.seeds import batch_triplet_rng

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

    def sample_table(self, ctx: SamplingContext, image_ids: np.ndarray) -> pa.Table:
        """The epoch's batch-structured list (its own settings are the options)."""
        return sample_batched_list(ctx, self, image_ids)
