"""Offline mining: triplets chosen with the previous epoch's embeddings.

Three strategies mine (all with ``needs_embeddings = True``), one module each:
:mod:`~pipeline.sampling.semihard`, :mod:`~pipeline.sampling.hard` and
:mod:`~pipeline.sampling.mixed`. They share their settings
(:class:`~pipeline.sampling.mined_options.MinedOptions`) and the block
recipe here: check the embeddings (:mod:`~pipeline.sampling.distances`), choose
positives (:mod:`~pipeline.sampling.positives`), measure ``d_qp``, then mine
negatives against it (:mod:`~pipeline.sampling.negatives`).

Determinism: the driver calls a strategy once per class with that class's RNG
(:func:`pipeline.seeds.class_rng`, ``[seed, epoch, label]``), and every random
choice comes from it in a fixed order: the positives, then the negatives chunk
by chunk (each module documents its own draws). So the same seed, epoch,
embeddings and settings (``chunk_size`` included) give identical rows, whatever
``n_blocks`` or the dask scheduler.
"""

from __future__ import annotations

import numpy as np

from pipeline.sampling.base import SamplingContext, TripletBlock
from pipeline.sampling.distances import mining_embeddings, pair_distances
from pipeline.sampling.mined_options import MinedOptions
from pipeline.sampling.negatives import NegativeRule, mine_negatives
from pipeline.sampling.positives import choose_positives


def mine_block(
    opts: MinedOptions,
    rule: NegativeRule,
    ctx: SamplingContext,
    queries: np.ndarray,
    rng: np.random.Generator,
    emb: np.ndarray | None = None,
) -> TripletBlock:
    """Mined rows for ``queries``: positives by ``opts.positive``, negatives by ``rule``.

    ``emb`` is the already checked embeddings (``mixed`` checks them once for
    both of its shares); by default they are checked here, naming ``opts.name``.
    """
    if emb is None:
        emb = mining_embeddings(ctx, opts.name)
    queries = np.asarray(queries, dtype=np.int64)
    positives = choose_positives(opts.positive, opts.relevance_cap, emb, ctx.classes, queries, rng)
    d_qp = pair_distances(emb, queries, positives)
    negatives, d_qn, strategy = mine_negatives(opts, rule, emb, ctx, queries, d_qp, rng)
    return TripletBlock(
        queries=queries, positives=positives, negatives=negatives, strategy=strategy, d_qp=d_qp, d_qn=d_qn
    )
