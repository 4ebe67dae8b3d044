"""The ``"hard"`` strategy: the nearest other-class candidate as negative.

Per-row ``strategy`` column:

====================  =========================================================
``"hard"``            the nearest other-class candidate
``"hard-uniform"``    no other-class candidate (possible with ``candidates="knn"``
                      only, where all ``knn_k`` neighbours share the query's
                      class): the uniform fallback negative
====================  =========================================================

The rule draws nothing beyond the candidates and fallbacks of
:mod:`pipeline.sampling.negatives`. With ``candidates="knn"`` and a large
enough ``knn_k`` it finds the globally hardest negative; the pool finds the
hardest of ``pool_size`` random ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.sampling.base import SamplingContext, TripletBlock
from pipeline.sampling.mined import mine_block
from pipeline.sampling.mined_options import MinedOptions
from pipeline.sampling.negatives import FALLBACK, PICKED, NegativeRule
from pipeline.sampling.registry import register


def _pick_hard(opts: MinedOptions, valid: np.ndarray, dist: np.ndarray, d_qp: np.ndarray, margin: np.float32,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The nearest usable candidate, whatever ``d_qp`` and the margin; the fallback if none is usable."""
    pick = np.argmin(np.where(valid, dist, np.inf), axis=1)
    return pick, np.where(valid.any(axis=1), PICKED, FALLBACK)


HARD = NegativeRule("hard", _pick_hard)


@register("hard")
@dataclass(frozen=True)
class HardStrategy(MinedOptions):
    """The nearest other-class candidate as negative; see the module doc."""

    name: str = field(default="hard", init=False)

    def sample(self, ctx: SamplingContext, queries: np.ndarray, rng: np.random.Generator) -> TripletBlock:
        """Mine ``queries``: positives by ``positive``, then the hardest candidate negatives."""
        return mine_block(self, HARD, ctx, queries, rng)
