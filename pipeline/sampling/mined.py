"""Offline mining strategies: triplets chosen with the previous epoch's embeddings.

Three strategies are registered (all with ``needs_embeddings = True``):

``"semihard"``
    For each query, a negative in the semi-hard band
    ``D(q,p) < D(q,n) < D(q,p) + margin`` (``margin`` = ``ctx.margin``, the triplet
    loss margin g; D is the *unsquared* Euclidean distance). Where the candidate set
    holds no band member, the nearest candidate beyond ``D(q,p)``; where it holds no
    candidate beyond ``D(q,p)`` at all, a uniform negative.
``"hard"``
    The nearest other-class candidate (uniform negative if the candidate set holds
    none, which can only happen with ``candidates="knn"``).
``"mixed"``
    ``round(mined_share * len(block))`` rows of every driver block, chosen with the
    block RNG, are mined with ``mined_strategy`` (``"semihard"`` or ``"hard"``); the
    others are fully uniform triplets (uniform positive *and* negative, the course
    protocol), still with their distances recorded.

Per-row ``strategy`` column (what :class:`~pipeline.sampling.base.TripletBlock`
carries), always ``<rule>`` or ``<rule>-<fallback>``:

============================  =====================================================
``"semihard"``                negative inside the band
``"semihard-beyond"``         no band member among the candidates: nearest beyond D(q,p)
``"semihard-uniform"``        no candidate beyond D(q,p): uniform negative
``"hard"``                    nearest other-class candidate
``"hard-uniform"``            no other-class candidate (knn only): uniform negative
``"uniform"``                 (mixed only) the non-mined, fully uniform rows
============================  =====================================================

The positive rule is a setting, not part of that column:

``positive="uniform"``
    :func:`~pipeline.sampling.uniform.uniform_positives`.
``positive="farthest"``
    The same-class image farthest from the query.
``positive="relevance"``
    A weighted draw as in Deep Ranking (Wang et al. 2014, "P(p) proportional to
    min(T_p, r)"), with the previous epoch's distance as relevance: for query q
    with other same-class members j, ``cap_q`` is the ``relevance_cap`` quantile
    (linear interpolation, as ``np.quantile``) of ``{D(q, j)}``, the weight is
    ``w_j = min(D(q, j), cap_q)`` and ``P(j) = w_j / sum(w)``. The query has weight
    0, so it is never its own positive (if all weights are 0 — every member sits
    on the query — the draw is uniform over the other members).
    ``relevance_cap=1`` means weights proportional to distance.

Candidate negatives (``candidates``):

``"pool"``
    ``pool_size`` uniform negatives per query drawn with the block RNG
    (:func:`~pipeline.sampling.uniform.uniform_negatives`; duplicates possible).
    Distances to them are computed exactly (``||q - n||``), in small tiles.
``"knn"``
    Exact ``knn_k`` nearest neighbours of the query over all training embeddings
    (:func:`pipeline.knn.knn_search`), keeping those of other classes. Decisions use
    the distances knn_search returns; the recorded ``d_qn`` is recomputed exactly,
    so it may differ from the decision value by float32 rounding (~1e-6 relative).
    One ``knn_search`` call per ``chunk_size`` queries (``knn_backend``,
    ``knn_device`` are passed through), so memory is ``chunk_size x knn_k`` plus
    the search's own copy of the database (faiss), whatever the block size.
    Cost: a full queries x training matrix product, ~1e13 FLOP per epoch at Tiny
    ImageNet scale — measured 244 s on 2 CPU cores (bench/bench_mining.py), against
    ~2 s for ``"pool"``. Use ``knn_device="cuda"`` where a GPU exists, or
    ``"mixed"`` to mine only a share of the rows (share 0.2: 37 s).
    Note for ``"semihard"``: the k nearest neighbours of a query are usually all
    closer than a uniform positive, so with overlapping classes most rows end as
    ``"semihard-uniform"`` (92% in the benchmark at ``knn_k=100``); knn suits
    ``"hard"``, the pool suits ``"semihard"``.

Other settings: ``chunk_size`` (default 4096) queries per candidate step;
``knn_backend`` (default ``"auto"``) and ``knn_device`` (default unset) for
:func:`pipeline.knn.knn_search`. Every strategy accepts every setting (unused
ones are still validated), so one config section can switch strategies; strings
such as ``"64"`` are converted, and a bad value raises ``ConfigError`` naming it.

Semi-hard band pick (``band_pick``): ``"random"`` (default; a uniform choice among
the band members, FaceNet style) or ``"nearest"`` (the band member closest to the
query, i.e. the hardest semi-hard one).

Recorded ``d_qp``/``d_qn`` are the exact float32 distances ``||q - p||``,
``||q - n||`` of the chosen images under ``ctx.embeddings``.

Determinism: every random choice comes from the block RNG in a fixed order, so the
same ``(seed, epoch, block)``, embeddings and settings (``chunk_size`` included)
give identical rows, whatever the dask scheduler. Order of draws per block:
positives (uniform: one ``uniform_positives`` call; relevance: one uniform per
row, class by class), then per chunk of ``chunk_size`` rows the pool
(``uniform_negatives`` of each query repeated ``pool_size`` times), the fallback
uniform negatives (one per row, always drawn), and for ``band_pick="random"`` one
uniform key per candidate. ``"mixed"`` first draws a permutation choosing the
mined rows, then mines them as above, then draws uniform positives and negatives
for the rest.

Memory is bounded: distances are evaluated in tiles of at most ``_GATHER_ELEMENTS``
gathered floats (small tiles are also the fastest: they stay in cache), queries are
handled ``chunk_size`` at a time, and positive search uses per-class tiles of at
most ``_GRAM_ELEMENTS`` distances.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from pipeline.errors import ConfigError, TrainingError
from pipeline.sampling.base import ClassLayout, SamplingContext, TripletBlock
from pipeline.sampling.registry import register
from pipeline.sampling.uniform import uniform_negatives, uniform_positives

POSITIVE_RULES = ("uniform", "farthest", "relevance")
CANDIDATE_RULES = ("pool", "knn")
BAND_PICKS = ("random", "nearest")
MINED_INNER = ("semihard", "hard")

# Floats gathered per distance tile (2 MiB): at 64 candidates x 512 dims that is 16
# queries, which measured ~3x faster than 1k-query tiles (the tile stays in cache).
_GATHER_ELEMENTS = 1 << 19
# Entries per (queries x class members) distance tile for the positive search (16 MiB).
_GRAM_ELEMENTS = 1 << 22

_SECTION = "[TripletList]"


# --------------------------------------------------------------------------- options


def _as_int(name: str, value: Any, minimum: int) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        as_int = int(value)
        if isinstance(value, float) and as_int != value:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"setting {_SECTION} {name} must be an integer, got {value!r}") from None
    if as_int < minimum:
        raise ConfigError(f"setting {_SECTION} {name} must be at least {minimum}, got {as_int}")
    return as_int


def _as_float(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> float:
    try:
        if isinstance(value, bool):
            raise TypeError
        as_float = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {_SECTION} {name} must be a number, got {value!r}") from None
    if not np.isfinite(as_float) or as_float > hi or as_float < lo or (lo_open and as_float == lo):
        bracket = "(" if lo_open else "["
        raise ConfigError(f"setting {_SECTION} {name} must lie in {bracket}{lo}, {hi}], got {value!r}")
    return as_float


def _as_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"setting {_SECTION} {name} must be one of {', '.join(choices)}; got {value!r}")
    return value


@dataclass(frozen=True)
class _MinedOptions:
    """Settings shared by all mined strategies (each accepts all of them, so one
    ``[TripletList]`` section can switch strategy without editing the other keys)."""

    positive: str = "uniform"
    candidates: str = "pool"
    pool_size: int = 64
    knn_k: int = 100
    mined_share: float = 0.5
    mined_strategy: str = "semihard"
    relevance_cap: float = 0.9
    band_pick: str = "random"
    chunk_size: int = 4096
    knn_backend: str = "auto"
    knn_device: str | None = None
    name: str = field(default="mined", init=False)
    needs_embeddings: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen)
        set_("positive", _as_choice("positive", self.positive, POSITIVE_RULES))
        set_("candidates", _as_choice("candidates", self.candidates, CANDIDATE_RULES))
        set_("pool_size", _as_int("pool_size", self.pool_size, 1))
        set_("knn_k", _as_int("knn_k", self.knn_k, 1))
        set_("mined_share", _as_float("mined_share", self.mined_share, 0.0, 1.0))
        set_("mined_strategy", _as_choice("mined_strategy", self.mined_strategy, MINED_INNER))
        set_("relevance_cap", _as_float("relevance_cap", self.relevance_cap, 0.0, 1.0, lo_open=True))
        set_("band_pick", _as_choice("band_pick", self.band_pick, BAND_PICKS))
        set_("chunk_size", _as_int("chunk_size", self.chunk_size, 1))
        if not isinstance(self.knn_backend, str):
            raise ConfigError(f"setting {_SECTION} knn_backend must be a string, got {self.knn_backend!r}")
        if self.knn_device is not None and not isinstance(self.knn_device, str):
            raise ConfigError(f"setting {_SECTION} knn_device must be a string or unset, got {self.knn_device!r}")

    def _settings(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}


# --------------------------------------------------------------------------- helpers


def _embeddings(ctx: SamplingContext, strategy: str) -> np.ndarray:
    """The context's embeddings as C-contiguous float32, checked against the layout."""
    emb = ctx.embeddings
    if emb is None:
        raise ConfigError(
            f"triplet strategy {strategy!r} (setting {_SECTION} strategy) mines with the previous "
            "epoch's embeddings, but none were given; use strategy 'uniform' for the first epoch "
            "or provide the embeddings of the training images"
        )
    emb = np.asarray(emb)
    n = ctx.layout.labels.size
    if emb.ndim != 2 or emb.shape[0] != n:
        raise ConfigError(
            f"triplet strategy {strategy!r} (setting {_SECTION} strategy) needs embeddings aligned "
            f"with the {n} training positions, shape ({n}, dim); got shape {emb.shape}"
        )
    if not np.issubdtype(emb.dtype, np.floating):
        raise ConfigError(
            f"triplet strategy {strategy!r} (setting {_SECTION} strategy) needs float embeddings, "
            f"got dtype {emb.dtype}"
        )
    emb = np.ascontiguousarray(emb, dtype=np.float32)  # no copy for float32 input
    finite = np.isfinite(emb).all(axis=1)
    if not finite.all():
        raise TrainingError(
            f"the previous epoch's embeddings hold NaN or infinite values (training position "
            f"{int(np.argmin(finite))}, {int((~finite).sum())} rows in all), so "
            f"{strategy!r} cannot mine with them; the model probably diverged"
        )
    margin = float(ctx.margin)
    if not np.isfinite(margin) or margin < 0:
        raise ConfigError(f"the triplet margin (setting margin) must be a finite number >= 0, got {ctx.margin!r}")
    return emb


def _pair_distances(emb: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact ``||emb[a] - emb[b]||`` for aligned 1-D index arrays, in bounded tiles."""
    out = np.empty(a.size, np.float32)
    step = max(1, _GATHER_ELEMENTS // max(1, emb.shape[1]))
    for lo in range(0, a.size, step):
        hi = min(lo + step, a.size)
        diff = np.take(emb, a[lo:hi], axis=0)
        diff -= np.take(emb, b[lo:hi], axis=0)
        out[lo:hi] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return out


def _row_distances(emb: np.ndarray, q: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Exact ``||emb[q[i]] - emb[cand[i, j]]||`` as float32 ``(len(q), cand.shape[1])``."""
    n, k = cand.shape
    out = np.empty((n, k), np.float32)
    step = max(1, _GATHER_ELEMENTS // max(1, k * emb.shape[1]))
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        diff = np.take(emb, cand[lo:hi].ravel(), axis=0).reshape(hi - lo, k, -1)
        diff -= np.take(emb, q[lo:hi], axis=0)[:, None, :]
        out[lo:hi] = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
    return out


def _lerp_quantile(sorted_rows: np.ndarray, n_valid: int, q: float) -> np.ndarray:
    """``np.quantile(..., method="linear")`` of the first ``n_valid`` sorted entries per row."""
    pos = q * (n_valid - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, n_valid - 1)
    frac = np.float32(pos - lo)
    return sorted_rows[:, lo] + (sorted_rows[:, hi] - sorted_rows[:, lo]) * frac


def _class_positives(
    emb: np.ndarray,
    layout: ClassLayout,
    queries: np.ndarray,
    rule: str,
    cap_quantile: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Farthest or relevance-weighted same-class positives, one class at a time."""
    y = layout.labels[queries]
    if np.any(layout.count[y] < 2):
        bad = int(y[np.argmax(layout.count[y] < 2)])
        raise ConfigError(
            f"class with label {bad} has a single training image, so no positive exists; "
            "every class needs at least 2 training images"
        )
    positives = np.empty(queries.size, np.int64)
    by_class = np.argsort(y, kind="stable")
    classes, first = np.unique(y[by_class], return_index=True)
    bounds = np.append(first, queries.size)
    for c, lo, hi in zip(classes, bounds[:-1], bounds[1:]):
        rows = by_class[lo:hi]  # places in `queries` of this class's occurrences
        members = layout.members(int(c))
        m = members.size
        xm = np.take(emb, members, axis=0)
        sq_m = np.einsum("ij,ij->i", xm, xm)
        uniq, inv = np.unique(queries[rows], return_inverse=True)
        step = max(1, _GRAM_ELEMENTS // m)
        # Tile over this class's distinct queries; occurrences follow their query.
        occ_order = np.argsort(inv, kind="stable")
        occ_bounds = np.searchsorted(inv[occ_order], np.arange(0, uniq.size + step, step))
        for t, u_lo in enumerate(range(0, uniq.size, step)):
            u = uniq[u_lo : u_lo + step]
            xu = np.take(emb, u, axis=0)
            d2 = xu @ xm.T
            d2 *= -2.0
            d2 += np.einsum("ij,ij->i", xu, xu)[:, None]
            d2 += sq_m[None, :]
            np.maximum(d2, 0.0, out=d2)
            d = np.sqrt(d2, out=d2)
            self_col = layout.rank[u]
            r = np.arange(u.size)
            occ = occ_order[occ_bounds[t] : occ_bounds[t + 1]]  # occurrences in this tile
            occ_u = inv[occ] - u_lo
            if rule == "farthest":
                d[r, self_col] = -np.inf
                positives[rows[occ]] = members[np.argmax(d, axis=1)[occ_u]]
                continue
            # relevance: w = min(d, per-query quantile cap), self weight 0.
            d[r, self_col] = np.inf
            srt = np.sort(d, axis=1)  # the self column (inf) sorts last
            cap = _lerp_quantile(srt, m - 1, cap_quantile)
            w = np.minimum(d, cap[:, None])
            w[r, self_col] = 0.0
            total = w.sum(axis=1)
            degenerate = ~(total > 0)
            if degenerate.any():
                w[degenerate] = 1.0
                w[r[degenerate], self_col[degenerate]] = 0.0
            cum = np.cumsum(w, axis=1, dtype=np.float64)
            draw = rng.random(occ.size) * cum[occ_u, -1]
            j = (cum[occ_u] <= draw[:, None]).sum(axis=1)
            j = np.minimum(j, m - 1)
            # Rounding at the top end could land on a trailing self column.
            bad = j == self_col[occ_u]
            if bad.any():
                j[bad] = np.argmax(w[occ_u[bad]], axis=1)
            positives[rows[occ]] = members[j]
    return positives


def _choose_positives(
    opts: _MinedOptions, emb: np.ndarray, ctx: SamplingContext, queries: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    if opts.positive == "uniform":
        return uniform_positives(ctx.layout, queries, rng)
    return _class_positives(emb, ctx.layout, queries, opts.positive, opts.relevance_cap, rng)


def _mine_negatives(
    opts: _MinedOptions,
    rule: str,
    emb: np.ndarray,
    ctx: SamplingContext,
    queries: np.ndarray,
    d_qp: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Negatives, exact d_qn and per-row strategy names for ``rule`` in {semihard, hard}."""
    layout = ctx.layout
    margin = np.float32(ctx.margin)
    n = queries.size
    negatives = np.empty(n, np.int64)
    d_qn = np.empty(n, np.float32)
    code = np.empty(n, np.int8)  # 0 = rule, 1 = beyond, 2 = uniform
    if opts.candidates == "knn":
        from pipeline.knn import knn_search
    for lo in range(0, n, opts.chunk_size):
        hi = min(lo + opts.chunk_size, n)
        q = queries[lo:hi]
        dp = d_qp[lo:hi][:, None]
        if opts.candidates == "pool":
            cand = uniform_negatives(layout, np.repeat(q, opts.pool_size), rng).reshape(q.size, opts.pool_size)
            dist = _row_distances(emb, q, cand)
            valid = np.ones(cand.shape, bool)
        else:
            # Exact neighbours of the chunk's distinct queries (repeats share one search).
            uniq, inv = np.unique(q, return_inverse=True)
            dist, cand = knn_search(
                np.take(emb, uniq, axis=0),
                emb,
                min(opts.knn_k, layout.labels.size),
                backend=opts.knn_backend,
                block_size=opts.chunk_size,
                device=opts.knn_device,
            )
            dist, cand = dist[inv], cand[inv]
            valid = (cand >= 0) & (layout.labels[np.maximum(cand, 0)] != layout.labels[q][:, None])
        # Drawn for every row whatever is needed, so RNG use never depends on the data.
        fallback = uniform_negatives(layout, q, rng)
        keys = rng.random(cand.shape) if (rule == "semihard" and opts.band_pick == "random") else None
        rows = np.arange(q.size)
        if rule == "hard":
            score = np.where(valid, dist, np.inf)
            pick = np.argmin(score, axis=1)
            found = valid.any(axis=1)
            c = np.where(found, 0, 2)
        else:
            beyond = valid & (dist > dp)
            band = beyond & (dist < dp + margin)
            has_band = band.any(axis=1)
            has_beyond = beyond.any(axis=1)
            if keys is not None:
                band_pick = np.argmin(np.where(band, keys, np.inf), axis=1)
            else:
                band_pick = np.argmin(np.where(band, dist, np.inf), axis=1)
            beyond_pick = np.argmin(np.where(beyond, dist, np.inf), axis=1)
            pick = np.where(has_band, band_pick, beyond_pick)
            found = has_beyond
            c = np.where(has_band, 0, np.where(has_beyond, 1, 2))
        chosen = np.where(found, cand[rows, pick], fallback)
        negatives[lo:hi] = chosen
        code[lo:hi] = c
        if opts.candidates == "pool":
            dn = dist[rows, pick]
            miss = ~found
            if miss.any():
                dn[miss] = _pair_distances(emb, q[miss], chosen[miss])
            d_qn[lo:hi] = dn
        else:
            d_qn[lo:hi] = _pair_distances(emb, q, chosen)
    names = np.array([rule, f"{rule}-beyond", f"{rule}-uniform"], dtype=object)
    return negatives, d_qn, names[code]


def _mine(
    opts: _MinedOptions,
    rule: str,
    ctx: SamplingContext,
    queries: np.ndarray,
    rng: np.random.Generator,
    emb: np.ndarray | None = None,
) -> TripletBlock:
    if emb is None:
        emb = _embeddings(ctx, opts.name)
    queries = np.asarray(queries, dtype=np.int64)
    positives = _choose_positives(opts, emb, ctx, queries, rng)
    d_qp = _pair_distances(emb, queries, positives)
    negatives, d_qn, strategy = _mine_negatives(opts, rule, emb, ctx, queries, d_qp, rng)
    return TripletBlock(
        queries=queries, positives=positives, negatives=negatives, strategy=strategy, d_qp=d_qp, d_qn=d_qn
    )


# --------------------------------------------------------------------------- strategies


@register("semihard")
@dataclass(frozen=True)
class SemiHardStrategy(_MinedOptions):
    """Semi-hard negatives (FaceNet) with beyond/uniform fallbacks; see the module doc."""

    name: str = field(default="semihard", init=False)

    def sample(self, ctx: SamplingContext, queries: np.ndarray, rng: np.random.Generator) -> TripletBlock:
        return _mine(self, "semihard", ctx, queries, rng)


@register("hard")
@dataclass(frozen=True)
class HardStrategy(_MinedOptions):
    """The nearest other-class candidate as negative; see the module doc."""

    name: str = field(default="hard", init=False)

    def sample(self, ctx: SamplingContext, queries: np.ndarray, rng: np.random.Generator) -> TripletBlock:
        return _mine(self, "hard", ctx, queries, rng)


@register("mixed")
@dataclass(frozen=True)
class MixedStrategy(_MinedOptions):
    """A ``mined_share`` of each block mined with ``mined_strategy``, the rest uniform."""

    name: str = field(default="mixed", init=False)

    def sample(self, ctx: SamplingContext, queries: np.ndarray, rng: np.random.Generator) -> TripletBlock:
        emb = _embeddings(ctx, self.name)
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
            inner = _mine(self, self.mined_strategy, ctx, queries[mined], rng, emb)
            positives[mined], negatives[mined] = inner.positives, inner.negatives
            d_qp[mined], d_qn[mined] = inner.d_qp, inner.d_qn
            strategy[mined] = inner.strategy
        rest = ~mined
        if rest.any():
            q = queries[rest]
            p = uniform_positives(ctx.layout, q, rng)
            ng = uniform_negatives(ctx.layout, q, rng)
            positives[rest], negatives[rest] = p, ng
            d_qp[rest] = _pair_distances(emb, q, p)
            d_qn[rest] = _pair_distances(emb, q, ng)
        return TripletBlock(
            queries=queries, positives=positives, negatives=negatives, strategy=strategy, d_qp=d_qp, d_qn=d_qn
        )
