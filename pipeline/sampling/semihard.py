"""The ``"semihard"`` strategy: negatives in FaceNet's semi-hard band.

For each query, a negative in the band ``D(q,p) < D(q,n) < D(q,p) + margin``
(``margin`` = ``ctx.margin``, the triplet loss margin g; D is the unsquared
Euclidean distance) among its candidates (:mod:`pipeline.sampling.negatives`).
Per-row ``strategy`` column:

========================  =====================================================
``"semihard"``            negative inside the band
``"semihard-beyond"``     no band member among the candidates: nearest beyond D(q,p)
``"semihard-uniform"``    no candidate beyond D(q,p): the uniform fallback negative
========================  =====================================================

Band pick (``band_pick``): ``"random"`` (default; a uniform choice among the
band members, FaceNet style: one uniform key per candidate is drawn, after the
fallback, even where no band exists) or ``"nearest"`` (the band member closest
to the query, i.e. the hardest semi-hard one; no draw).

Note on ``candidates="knn"``: the k nearest neighbours of a query are usually
all closer than a uniform positive, so with overlapping classes most rows end as
``"semihard-uniform"`` (92% in bench/bench_mining.py at ``knn_k=100``); knn
suits ``"hard"``, the pool suits ``"semihard"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.sampling.base import SamplingContext, TripletBlock
from pipeline.sampling.mined import mine_block
from pipeline.sampling.mined_options import MinedOptions
from pipeline.sampling.negatives import BEYOND, FALLBACK, PICKED, NegativeRule
from pipeline.sampling.registry import register


def _pick_semihard(opts: MinedOptions, valid: np.ndarray, dist: np.ndarray, d_qp: np.ndarray, margin: np.float32,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A band member (random or nearest), else the nearest candidate beyond ``d_qp``, else the fallback."""
    keys = rng.random(dist.shape) if opts.band_pick == "random" else None
    beyond = valid & (dist > d_qp)
    band = beyond & (dist < d_qp + margin)
    has_band = band.any(axis=1)
    has_beyond = beyond.any(axis=1)
    band_pick = np.argmin(np.where(band, keys if keys is not None else dist, np.inf), axis=1)
    beyond_pick = np.argmin(np.where(beyond, dist, np.inf), axis=1)
    pick = np.where(has_band, band_pick, beyond_pick)
    return pick, np.where(has_band, PICKED, np.where(has_beyond, BEYOND, FALLBACK))


SEMIHARD = NegativeRule("semihard", _pick_semihard)


@register("semihard")
@dataclass(frozen=True)
class SemiHardStrategy(MinedOptions):
    """Semi-hard negatives with beyond/uniform fallbacks; see the module doc."""

    name: str = field(default="semihard", init=False)

    def sample(self, ctx: SamplingContext, queries: np.ndarray, rng: np.random.Generator) -> TripletBlock:
        """Mine ``queries``: positives by ``positive``, then semi-hard negatives."""
        return mine_block(self, SEMIHARD, ctx, queries, rng)
