"""The ``"mixed"`` strategy: a share of the rows mined, the rest the course protocol.

Of the ``n`` rows of each call — the driver calls once per class, so ``n`` is
the class's images times ``triplets_per_query`` — ``round(mined_share * n)``
are mined with ``mined_strategy`` (``"semihard"`` or ``"hard"``, with all their
fallbacks); the others are fully uniform triplets (uniform positive *and*
negative), still with their distances recorded, and ``"uniform"`` in the
``strategy`` column. Rounding is per class, so the list's mined count is the
sum of the classes' rounded shares.

Draws, from the class's RNG: one permutation choosing the mined rows, then the
mining of those rows (:mod:`pipeline.sampling.mined`), then uniform positives
and uniform negatives for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.sampling.base import SamplingContext, TripletBlock
from pipeline.sampling.distances import mining_embeddings, pair_distances
from pipeline.sampling.hard import HARD
from pipeline.sampling.mined import mine_block
from pipeline.sampling.mined_options import MinedOptions
from pipeline.sampling.registry import register
from pipeline.sampling.semihard import SEMIHARD
from pipeline.sampling.uniform import uniform_negatives, uniform_positives

_INNER = {rule.name: rule for rule in (SEMIHARD, HARD)}


@register("mixed")
@dataclass(frozen=True)
class MixedStrategy(MinedOptions):
    """A ``mined_share`` of each class's rows mined with ``mined_strategy``, the rest uniform."""

    name: str = field(default="mixed", init=False)

    def sample(self, ctx: SamplingContext, queries: np.ndarray, rng: np.random.Generator) -> TripletBlock:
        """Choose the mined rows, mine them, and draw uniform triplets for the others."""
        emb = mining_embeddings(ctx, self.name)
        queries = np.asarray(queries, dtype=np.int64)
        n = queries.size
        n_mined = int(round(self.mined_share * n))
        mined = np.zeros(n, bool)
        mined[rng.permutation(n)[:n_mined]] = True
        positives = np.empty(n, np.int64)
        negatives = np.empty(n, np.int64)
        d_qp = np.empty(n, np.float32)
        d_qn = np.empty(n, np.float32)
        strategy = np.full(n, "uniform", dtype=object)
        if n_mined:
            inner = mine_block(self, _INNER[self.mined_strategy], ctx, queries[mined], rng, emb)
            positives[mined], negatives[mined] = inner.positives, inner.negatives
            d_qp[mined], d_qn[mined] = inner.d_qp, inner.d_qn
            strategy[mined] = inner.strategy
        rest = ~mined
        if rest.any():
            q = queries[rest]
            p = uniform_positives(ctx.classes, q, rng)
            ng = uniform_negatives(ctx.classes, q, rng)
            positives[rest], negatives[rest] = p, ng
            d_qp[rest] = pair_distances(emb, q, p)
            d_qn[rest] = pair_distances(emb, q, ng)
        return TripletBlock(
            queries=queries, positives=positives, negatives=negatives, strategy=strategy, d_qp=d_qp, d_qn=d_qn
        )
