"""The negative of a mined row: candidate sets, and a rule that picks among them.

Candidate negatives (``candidates``):

``"pool"``
    ``pool_size`` uniform negatives per query drawn with the class's RNG
    (:func:`~pipeline.sampling.uniform.uniform_negatives`; duplicates possible).
    Distances to them are computed exactly (``||q - n||``), in small tiles.
``"knn"``
    Exact ``knn_k`` nearest neighbours of the query over all training embeddings
    (:func:`pipeline.knn.knn_search`), keeping those of other classes. Decisions use
    the distances knn_search returns; the recorded ``d_qn`` is recomputed exactly,
    so it may differ from the decision value by float32 rounding (~1e-6 relative).
    One ``knn_search`` call per ``chunk_size`` queries (``knn_backend``,
    ``knn_device`` are passed through), so memory is ``chunk_size x knn_k`` plus
    the search's own copy of the database (faiss), whatever the number of queries.
    Cost: a full queries x training matrix product, ~1e13 FLOP per epoch at Tiny
    ImageNet scale — measured 244 s on 2 CPU cores (bench/bench_mining.py), against
    ~2 s for ``"pool"``. Use ``knn_device="cuda"`` where a GPU exists, or
    ``"mixed"`` to mine only a share of the rows (share 0.2: 37 s).

A :class:`NegativeRule` (:data:`~pipeline.sampling.semihard.SEMIHARD`,
:data:`~pipeline.sampling.hard.HARD`) then picks one candidate per row, or
none, in which case the row takes its uniform fallback negative. The per-row
``strategy`` column is ``<rule>``, ``<rule>-beyond`` (semihard's nearer
fallback) or ``<rule>-uniform``.

Draws, per chunk of ``chunk_size`` rows, in this order: the pool
(``uniform_negatives`` of each query repeated ``pool_size`` times; none for
knn), the fallback uniform negatives (one per row, always drawn, so RNG use
never depends on the data), then whatever the rule draws. Results therefore
depend on ``chunk_size`` too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from pipeline.sampling.base import SamplingContext
from pipeline.sampling.distances import pair_distances, row_distances
from pipeline.sampling.mined_options import MinedOptions
from pipeline.sampling.uniform import uniform_negatives

# Per-row outcome of a rule's pick; the index into the row's strategy names.
PICKED, BEYOND, FALLBACK = 0, 1, 2

Pick = Callable[[MinedOptions, np.ndarray, np.ndarray, np.ndarray, np.float32, np.random.Generator],
                tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class NegativeRule:
    """How a mined strategy chooses among a chunk's candidates.

    ``pick(opts, valid, dist, d_qp, margin, rng)`` gets ``(rows, k)`` arrays of
    usable candidates and their distances, ``d_qp`` as a ``(rows, 1)`` column,
    and returns the chosen column of each row and its outcome code
    (``PICKED``, ``BEYOND`` or ``FALLBACK``; the column is ignored for ``FALLBACK``).
    """

    name: str
    pick: Pick


def mine_negatives(
    opts: MinedOptions,
    rule: NegativeRule,
    emb: np.ndarray,
    ctx: SamplingContext,
    queries: np.ndarray,
    d_qp: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Negatives, their exact ``d_qn`` and the per-row strategy names under ``rule``."""
    classes = ctx.classes
    margin = np.float32(ctx.margin)
    n = queries.size
    negatives = np.empty(n, np.int64)
    d_qn = np.empty(n, np.float32)
    code = np.empty(n, np.int8)
    if opts.candidates == "knn":
        from pipeline.knn import knn_search
    for lo in range(0, n, opts.chunk_size):
        hi = min(lo + opts.chunk_size, n)
        q = queries[lo:hi]
        if opts.candidates == "pool":
            cand = uniform_negatives(classes, np.repeat(q, opts.pool_size), rng).reshape(q.size, opts.pool_size)
            dist = row_distances(emb, q, cand)
            valid = np.ones(cand.shape, bool)
        else:
            # Exact neighbours of the chunk's distinct queries (repeats share one search).
            uniq, inv = np.unique(q, return_inverse=True)
            dist, cand = knn_search(
                np.take(emb, uniq, axis=0),
                emb,
                min(opts.knn_k, classes.labels.size),
                backend=opts.knn_backend,
                block_size=opts.chunk_size,
                device=opts.knn_device,
            )
            dist, cand = dist[inv], cand[inv]
            valid = (cand >= 0) & (classes.labels[np.maximum(cand, 0)] != classes.labels[q][:, None])
        fallback = uniform_negatives(classes, q, rng)
        pick, c = rule.pick(opts, valid, dist, d_qp[lo:hi][:, None], margin, rng)
        found = c != FALLBACK
        rows = np.arange(q.size)
        chosen = np.where(found, cand[rows, pick], fallback)
        negatives[lo:hi] = chosen
        code[lo:hi] = c
        if opts.candidates == "pool":
            dn = dist[rows, pick]
            miss = ~found
            if miss.any():
                dn[miss] = pair_distances(emb, q[miss], chosen[miss])
            d_qn[lo:hi] = dn
        else:
            d_qn[lo:hi] = pair_distances(emb, q, chosen)
    names = np.array([rule.name, f"{rule.name}-beyond", f"{rule.name}-uniform"], dtype=object)
    return negatives, d_qn, names[code]
