"""Offline mining: triplets chosen with the previous epoch's embeddings.

One strategy class, :class:`MinedStrategy`, registered under the name of each
rule it applies:

``"semihard"``
    For each query, a negative in FaceNet's semi-hard band
    ``D(q,p) < D(q,n) < D(q,p) + margin`` (``margin`` = ``ctx.margin``, the
    triplet loss margin g; D is the unsquared Euclidean distance) among its
    candidates. Per-row ``strategy`` column: ``"semihard"`` (a band member),
    ``"semihard-beyond"`` (no band member among the candidates: the nearest
    beyond D(q,p)) or ``"semihard-uniform"`` (no candidate beyond D(q,p): the
    uniform fallback negative). Band pick (``band_pick``): ``"random"`` (default;
    a uniform choice among the band members, FaceNet style: one uniform key per
    candidate is drawn, after the fallback, even where no band exists) or
    ``"nearest"`` (the band member closest to the query; no draw). With
    ``candidates="knn"`` the k nearest neighbours of a query are usually all
    closer than a uniform positive, so with overlapping classes most rows end as
    ``"semihard-uniform"`` (92% in bench/bench_mining.py at ``knn_k=100``): knn
    suits ``"hard"``, the pool suits ``"semihard"``.
``"hard"``
    The nearest other-class candidate: ``"hard"``, or ``"hard-uniform"`` when no
    candidate is of another class (possible with ``candidates="knn"`` only, where
    all ``knn_k`` neighbours share the query's class). It draws nothing beyond the
    candidates and fallbacks. With ``candidates="knn"`` and a large enough
    ``knn_k`` it finds the globally hardest negative; the pool finds the hardest
    of ``pool_size`` random ones.
``"mixed"``
    Of the ``n`` rows of each call (the class's images times
    ``triplets_per_query``), ``round(mined_share * n)`` are mined with
    ``mined_strategy`` (``"semihard"`` or ``"hard"``, with all their fallbacks);
    the others are fully uniform triplets (uniform positive *and* negative), still
    with their distances recorded, and ``"uniform"`` in the ``strategy`` column.
    Rounding is per class, so the list's mined count is the sum of the classes'
    rounded shares. Draws: one permutation choosing the mined rows, then the
    mining of those rows, then uniform positives and uniform negatives for the rest.

A mined row: check the embeddings (:mod:`~pipeline.sampling.distances`), choose
the positive (:mod:`~pipeline.sampling.positives`), measure ``d_qp``, then mine
the negative against it. Candidate negatives (``candidates``):

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

A :class:`NegativeRule` then picks one candidate per row, or none, in which case
the row takes its uniform fallback negative.

Determinism: the driver calls a strategy once per class with that class's RNG
(:func:`pipeline.seeds.class_rng`, ``[seed, epoch, label]``), and every random
choice comes from it in a fixed order: the positives, then the negatives chunk
by chunk: the pool (``uniform_negatives`` of each query repeated ``pool_size``
times; none for knn), the fallback uniform negatives (one per row, always drawn,
so RNG use never depends on the data), then whatever the rule draws. So the same
seed, epoch, embeddings and settings (``chunk_size`` included) give identical
rows, whatever ``n_blocks`` or the dask scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Literal

import numpy as np

from pipeline.sampling.base import STRATEGIES, SamplingContext, TripletBlock
from pipeline.sampling.distances import mining_embeddings, pair_distances, row_distances
from pipeline.sampling.positives import choose_positives
from pipeline.sampling.settings import MINED_SETTINGS, MinedOptions
from pipeline.sampling.uniform import uniform_negatives, uniform_positives

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


def _pick_hard(opts: MinedOptions, valid: np.ndarray, dist: np.ndarray, d_qp: np.ndarray, margin: np.float32,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The nearest usable candidate, whatever ``d_qp`` and the margin; the fallback if none is usable."""
    pick = np.argmin(np.where(valid, dist, np.inf), axis=1)
    return pick, np.where(valid.any(axis=1), PICKED, FALLBACK)


NEGATIVE_RULES = {rule.name: rule for rule in (NegativeRule("semihard", _pick_semihard),
                                                NegativeRule("hard", _pick_hard))}
MINED_STRATEGIES = ("semihard", "hard", "mixed")


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


def mine_block(opts: MinedOptions, rule: NegativeRule, ctx: SamplingContext, queries: np.ndarray,
               rng: np.random.Generator, emb: np.ndarray) -> TripletBlock:
    """Mined rows for ``queries`` (``emb``: the checked embeddings): positives by ``opts.positive``,
    negatives by ``rule``."""
    queries = np.asarray(queries, dtype=np.int64)
    positives = choose_positives(opts.positive, opts.relevance_cap, emb, ctx.classes, queries, rng)
    d_qp = pair_distances(emb, queries, positives)
    negatives, d_qn, strategy = mine_negatives(opts, rule, emb, ctx, queries, d_qp, rng)
    return TripletBlock(
        queries=queries, positives=positives, negatives=negatives, strategy=strategy, d_qp=d_qp, d_qn=d_qn
    )


@dataclass(frozen=True)
class MinedStrategy(MinedOptions):
    """The mined strategy whose rule is ``name`` (``semihard``, ``hard`` or ``mixed``); see the module doc."""

    name: str = "hard"
    needs_embeddings: bool = field(default=True, init=False)
    scope: Literal["class"] = field(default="class", init=False)

    def __post_init__(self) -> None:
        if self.name not in MINED_STRATEGIES:
            raise ValueError(f"no mined strategy {self.name!r}; the rules are {', '.join(MINED_STRATEGIES)}")
        super().__post_init__()

    def reads(self) -> frozenset[str]:
        """Its mined options (``mined_share``/``mined_strategy`` for ``mixed`` only) and the list's own settings."""
        own = MINED_SETTINGS if self.name == "mixed" else MINED_SETTINGS - {"mined_share", "mined_strategy"}
        return own | {"triplets_per_query", "mine_first_epoch"}

    def sample(self, ctx: SamplingContext, queries: np.ndarray, rng: np.random.Generator) -> TripletBlock:
        """Mine ``queries`` (one class's) under this strategy's rule."""
        emb = mining_embeddings(ctx, self.name)
        if self.name != "mixed":
            return mine_block(self, NEGATIVE_RULES[self.name], ctx, queries, rng, emb)
        return self._sample_mixed(ctx, np.asarray(queries, dtype=np.int64), rng, emb)

    def _sample_mixed(self, ctx: SamplingContext, queries: np.ndarray, rng: np.random.Generator,
                      emb: np.ndarray) -> TripletBlock:
        """Choose the mined rows, mine them, and draw uniform triplets for the others."""
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
            inner = mine_block(self, NEGATIVE_RULES[self.mined_strategy], ctx, queries[mined], rng, emb)
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


for _name in MINED_STRATEGIES:
    STRATEGIES.add(_name, partial(MinedStrategy, name=_name))
