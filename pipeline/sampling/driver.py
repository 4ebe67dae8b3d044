"""Build one epoch's triplet list: blocks of classes sampled in parallel with dask.

Determinism: each class is sampled with its own RNG,
:func:`pipeline.seeds.class_rng` (``[seed, epoch, label]``), and the rows are
then shuffled with :func:`pipeline.seeds.shuffle_rng` (``[seed, epoch, 2**30]``).
Blocks only group classes into dask tasks, so the same inputs give identical
rows whatever ``n_blocks``, the dask scheduler or cluster
(:mod:`pipeline.dask_cluster`), worker count or Luigi worker process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dask
import numpy as np
import pyarrow as pa

from pipeline.dask_cluster import compute, share
from pipeline.sampling.base import (
    ClassMembers,
    ClassStrategy,
    SamplingContext,
    TripletBlock,
    TripletStrategy,
)
from pipeline.sampling.settings import ListSettings
from pipeline.seeds import class_rng, shuffle_rng

if TYPE_CHECKING:
    from distributed import Client

TRIPLET_SCHEMA = pa.schema(
    [
        ("epoch", pa.int32()),
        ("query", pa.int64()),
        ("positive", pa.int64()),
        ("negative", pa.int64()),
        ("query_label", pa.int32()),
        ("negative_label", pa.int32()),
        ("strategy", pa.dictionary(pa.int8(), pa.string())),
        ("d_qp", pa.float32()),
        ("d_qn", pa.float32()),
    ]
)

# A batch-structured list: the same columns plus the batch number (second, read right after the epoch).
BATCHED_SCHEMA = TRIPLET_SCHEMA.insert(1, pa.field("batch", pa.int32()))


def class_blocks(classes: ClassMembers, n_blocks: int, triplets_per_query: int) -> list[np.ndarray]:
    """Query positions (each repeated ``triplets_per_query`` times) split into blocks of whole classes."""
    groups = np.array_split(np.arange(classes.n_classes), max(1, min(n_blocks, classes.n_classes)))
    blocks = []
    for group in groups:
        if group.size == 0:
            continue
        lo = int(classes.start[group[0]])
        hi = int(classes.start[group[-1]] + classes.count[group[-1]])
        blocks.append(np.repeat(classes.order[lo:hi], triplets_per_query))
    return blocks


def _run_block(strategy: ClassStrategy, ctx: SamplingContext, queries: np.ndarray) -> TripletBlock:
    """Sample a block class by class, each class with its own RNG, so the rows do
    not depend on how classes are grouped into blocks (``n_blocks``)."""
    labels = ctx.classes.labels[queries]
    parts = [strategy.sample(ctx, queries[labels == c], class_rng(ctx.seed, ctx.epoch, int(c)))
             for c in np.unique(labels)]
    return concat_blocks(parts)


def concat_blocks(parts: list[TripletBlock]) -> TripletBlock:
    """One block from several (distances stay ``None`` only if absent everywhere)."""

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    def cat_distances(name: str) -> np.ndarray | None:
        arrays = [getattr(p, name) for p in parts]
        if all(a is None for a in arrays):
            return None
        return np.concatenate([a if a is not None else np.full(p.queries.size, np.nan, np.float32)
                               for a, p in zip(arrays, parts)])

    return TripletBlock(queries=cat("queries"), positives=cat("positives"), negatives=cat("negatives"),
                        strategy=cat("strategy"), d_qp=cat_distances("d_qp"), d_qn=cat_distances("d_qn"))


def runs_on_dask(strategy: TripletStrategy) -> bool:
    """Whether :func:`sample_triplets` spreads ``strategy``'s work over dask (class blocks):
    whole-epoch strategies (``batched``) run in the calling process."""
    return strategy.scope == "class"


def sample_triplets(
    ctx: SamplingContext,
    strategy: TripletStrategy,
    image_ids: np.ndarray,
    settings: ListSettings | None = None,
    client: Client | None = None,
) -> pa.Table:
    """Sample one epoch of triplets and return them as an Arrow table.

    ``image_ids[i]`` is the dataset id of training position ``i`` (the positions
    that ``ctx.classes`` and ``ctx.embeddings`` index). Every training image is the
    query ``settings.triplets_per_query`` times; rows come in a seeded shuffled
    order. ``settings.n_blocks`` and ``settings.dask_scheduler`` (any dask
    scheduler name, ``"synchronous"`` in tests) only spread the work.
    ``settings.strategy`` is not read: the caller builds ``strategy``
    (:meth:`ListSettings.sampler` builds the one of an epoch).
    With ``client``, the blocks run on its dask.distributed cluster instead of
    ``settings.dask_scheduler``; the rows are the same.
    An epoch-scope strategy (``batched``) gets the epoch at once: its batches span
    classes, so class blocks do not apply.
    Without ``settings``, the defaults of :class:`ListSettings`.
    """
    settings = settings or ListSettings()
    if strategy.scope == "epoch":
        return strategy.sample_table(ctx, image_ids)
    blocks = class_blocks(ctx.classes, settings.n_blocks, settings.triplets_per_query)
    # The context (labels, and the previous epoch's embeddings when mining) is sent
    # to a cluster once, not once per block; blocks carry only query positions.
    shared_ctx = share(ctx, client)
    tasks = [dask.delayed(_run_block)(strategy, shared_ctx, q) for q in blocks]
    results: list[TripletBlock] = list(compute(tasks, client, settings.dask_scheduler))
    return assemble_table(results, ctx, image_ids)


def assemble_table(results: list[TripletBlock], ctx: SamplingContext, image_ids: np.ndarray) -> pa.Table:
    """Concatenate block results, shuffle with the epoch's shuffle RNG and map to image ids."""
    q = np.concatenate([r.queries for r in results])
    p = np.concatenate([r.positives for r in results])
    n = np.concatenate([r.negatives for r in results])
    s = np.concatenate([r.strategy for r in results])
    nan = lambda r: np.full(r.queries.size, np.nan, np.float32)  # noqa: E731
    dqp = np.concatenate([r.d_qp if r.d_qp is not None else nan(r) for r in results]).astype(np.float32)
    dqn = np.concatenate([r.d_qn if r.d_qn is not None else nan(r) for r in results]).astype(np.float32)
    perm = shuffle_rng(ctx.seed, ctx.epoch).permutation(q.size)
    q, p, n, s, dqp, dqn = q[perm], p[perm], n[perm], s[perm], dqp[perm], dqn[perm]
    return triplet_table(ctx, image_ids, q, p, n, s, dqp, dqn)


def triplet_table(ctx: SamplingContext, image_ids: np.ndarray, q: np.ndarray, p: np.ndarray, n: np.ndarray,
                  strategy: np.ndarray, d_qp: np.ndarray, d_qn: np.ndarray,
                  batch: np.ndarray | None = None) -> pa.Table:
    """The Parquet-ready table of triplets given as training positions; with ``batch``, a
    batch-structured one (the ``batch`` column second)."""
    labels = ctx.classes.labels
    ids = np.asarray(image_ids, dtype=np.int64)
    columns = {
        "epoch": pa.array(np.full(q.size, ctx.epoch, np.int32)),
        "query": pa.array(ids[q]),
        "positive": pa.array(ids[p]),
        "negative": pa.array(ids[n]),
        "query_label": pa.array(labels[q].astype(np.int32)),
        "negative_label": pa.array(labels[n].astype(np.int32)),
        "strategy": pa.array(strategy, type=pa.string()).dictionary_encode().cast(
            TRIPLET_SCHEMA.field("strategy").type),
        "d_qp": pa.array(np.asarray(d_qp, dtype=np.float32)),
        "d_qn": pa.array(np.asarray(d_qn, dtype=np.float32)),
    }
    schema = TRIPLET_SCHEMA
    if batch is not None:
        schema = BATCHED_SCHEMA
        columns = {"epoch": columns.pop("epoch"), "batch": pa.array(batch.astype(np.int32)), **columns}
    return pa.table(columns, schema=schema)
