"""Build one epoch's triplet list: blocks of classes sampled in parallel with dask.

Determinism: each class is sampled with an RNG seeded from ``(seed, epoch,
class)`` and the final shuffle from ``(seed, epoch)``. Blocks only group classes
into dask tasks, so the same inputs give identical rows whatever ``n_blocks``,
the dask scheduler, worker count or Luigi worker process.
"""

from __future__ import annotations

import dask
import numpy as np
import pyarrow as pa

from pipeline.sampling.base import ClassLayout, SamplingContext, TripletBlock, TripletStrategy

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

_SHUFFLE_STREAM = 1 << 30  # keeps the shuffle RNG apart from every block's RNG


def block_rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    """The RNG of one class (``stream`` = its label): a pure function of (seed, epoch, stream)."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, stream]))


def class_blocks(layout: ClassLayout, n_blocks: int, triplets_per_query: int) -> list[np.ndarray]:
    """Query positions (each repeated ``triplets_per_query`` times) split by class blocks."""
    classes = np.array_split(np.arange(layout.n_classes), max(1, min(n_blocks, layout.n_classes)))
    blocks = []
    for cls in classes:
        if cls.size == 0:
            continue
        lo = int(layout.start[cls[0]])
        hi = int(layout.start[cls[-1]] + layout.count[cls[-1]])
        blocks.append(np.repeat(layout.order[lo:hi], triplets_per_query))
    return blocks


def _run_block(strategy: TripletStrategy, ctx: SamplingContext, queries: np.ndarray) -> TripletBlock:
    """Sample a block class by class, each class with its own RNG, so the rows do
    not depend on how classes are grouped into blocks (``n_blocks``)."""
    labels = ctx.layout.labels[queries]
    parts = [strategy.sample(ctx, queries[labels == c], block_rng(ctx.seed, ctx.epoch, int(c)))
             for c in np.unique(labels)]
    return concat_blocks(parts)


def concat_blocks(parts: list[TripletBlock]) -> TripletBlock:
    """One block from several (distances stay ``None`` only if absent everywhere)."""

    def cat(name: str) -> np.ndarray | None:
        arrays = [getattr(p, name) for p in parts]
        if all(a is None for a in arrays):
            return None
        return np.concatenate([a if a is not None else np.full(p.queries.size, np.nan, np.float32)
                               for a, p in zip(arrays, parts)])

    return TripletBlock(queries=cat("queries"), positives=cat("positives"), negatives=cat("negatives"),
                        strategy=cat("strategy"), d_qp=cat("d_qp"), d_qn=cat("d_qn"))


def sample_triplets(
    ctx: SamplingContext,
    strategy: TripletStrategy,
    image_ids: np.ndarray,
    *,
    triplets_per_query: int = 1,
    n_blocks: int = 8,
    scheduler: str | None = None,
) -> pa.Table:
    """Sample one epoch of triplets and return them as an Arrow table.

    ``image_ids[i]`` is the dataset id of training position ``i`` (the positions
    that ``ctx.layout`` and ``ctx.embeddings`` index). Every training image is the
    query ``triplets_per_query`` times; rows come in a seeded shuffled order.
    ``scheduler`` is any dask scheduler name (``"synchronous"`` in tests).
    A strategy that builds whole tables (``sample_table``, e.g. ``batched``) gets the
    epoch at once: its batches span classes, so class blocks do not apply.
    """
    if hasattr(strategy, "sample_table"):
        return strategy.sample_table(ctx, image_ids)
    blocks = class_blocks(ctx.layout, n_blocks, triplets_per_query)
    tasks = [dask.delayed(_run_block)(strategy, ctx, q) for q in blocks]
    results: list[TripletBlock] = list(dask.compute(*tasks, scheduler=scheduler))
    return assemble_table(results, ctx, image_ids)


def assemble_table(results: list[TripletBlock], ctx: SamplingContext, image_ids: np.ndarray) -> pa.Table:
    """Concatenate block results, shuffle with the epoch RNG and map to image ids."""
    q = np.concatenate([r.queries for r in results])
    p = np.concatenate([r.positives for r in results])
    n = np.concatenate([r.negatives for r in results])
    s = np.concatenate([r.strategy for r in results])
    nan = lambda r: np.full(r.queries.size, np.nan, np.float32)  # noqa: E731
    dqp = np.concatenate([r.d_qp if r.d_qp is not None else nan(r) for r in results]).astype(np.float32)
    dqn = np.concatenate([r.d_qn if r.d_qn is not None else nan(r) for r in results]).astype(np.float32)
    perm = block_rng(ctx.seed, ctx.epoch, _SHUFFLE_STREAM).permutation(q.size)
    q, p, n, s, dqp, dqn = q[perm], p[perm], n[perm], s[perm], dqp[perm], dqn[perm]
    return triplet_table(ctx, image_ids, q, p, n, s, dqp, dqn)


def triplet_table(ctx: SamplingContext, image_ids: np.ndarray, q: np.ndarray, p: np.ndarray, n: np.ndarray,
                  strategy: np.ndarray, d_qp: np.ndarray, d_qn: np.ndarray,
                  batch: np.ndarray | None = None) -> pa.Table:
    """The Parquet-ready table of triplets given as training positions; with ``batch``, a
    batch-structured one (the ``batch`` column second)."""
    labels = ctx.layout.labels
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
