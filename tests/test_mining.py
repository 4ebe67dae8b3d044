"""Mined triplet strategies (semihard / hard / mixed) against brute-force truth."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipeline.errors import ConfigError, TrainingError
from pipeline.sampling import (
    TRIPLET_SCHEMA,
    ClassMembers,
    ListSettings,
    SamplingContext,
    available,
    get_strategy,
    sample_triplets,
)
from pipeline.sampling.mining_summary import summarize_triplets
from pipeline.sampling.uniform import uniform_negatives, uniform_positives
from pipeline.seeds import class_rng, shuffle_rng

N_CLASSES, PER_CLASS, DIM, MARGIN = 4, 30, 8, 0.5
N = N_CLASSES * PER_CLASS
ATOL = 1e-4


def _data(seed: int = 0, spread: float = 0.8):
    """4 overlapping classes x 30 points in 8-D, positions in shuffled label order."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(N_CLASSES), PER_CLASS))
    centres = rng.standard_normal((N_CLASSES, DIM))
    emb = (centres[labels] + spread * rng.standard_normal((N, DIM))).astype(np.float32)
    return labels, emb


def _ctx(labels, emb, *, epoch=1, seed=7, margin=MARGIN):
    return SamplingContext(ClassMembers.from_labels(labels), epoch=epoch, seed=seed, margin=margin, embeddings=emb)


def _truth(emb):
    e = emb.astype(np.float64)
    return np.sqrt(((e[:, None, :] - e[None, :, :]) ** 2).sum(-1))


def _run(name, ctx, tpq=2, n_blocks=3, dask_scheduler="synchronous", **opts):
    settings = ListSettings(triplets_per_query=tpq, n_blocks=n_blocks, dask_scheduler=dask_scheduler)
    return sample_triplets(ctx, get_strategy(name, **opts), np.arange(ctx.labels.size), settings).to_pandas()


# Computed with the code before the sampling package was split (commit c128798). Pool candidates
# only: kNN may run on another backend elsewhere (faiss or numpy), which may break ties differently.
MINED_DIGESTS = {
    ("semihard", ()): "3f471deb094c526a",
    ("semihard", (("band_pick", "nearest"), ("positive", "farthest"))): "efb34329065120de",
    ("hard", (("positive", "relevance"), ("relevance_cap", 0.7))): "dec5741bf3416dae",
    ("mixed", (("mined_share", 0.3), ("mined_strategy", "semihard"), ("positive", "relevance"))): "e51a4b93134ee375",
    ("mixed", (("chunk_size", 7), ("mined_strategy", "hard"), ("pool_size", 5))): "934d9aebcc4588ee",
}


def _arrays(df):
    return (df["query"].to_numpy(), df["positive"].to_numpy(), df["negative"].to_numpy(),
            df["strategy"].astype(str).to_numpy(), df["d_qp"].to_numpy(np.float64), df["d_qn"].to_numpy(np.float64))


def test_registered():
    for name in ("semihard", "hard", "mixed"):
        assert name in available()
        s = get_strategy(name)
        assert s.needs_embeddings and s.name == name


@pytest.mark.parametrize(
    "opts",
    [dict(candidates="knn", knn_k=N), dict(candidates="pool", pool_size=3000),
     dict(candidates="knn", knn_k=N, band_pick="nearest")],
)
def test_semihard_band_when_band_exists(opts):
    labels, emb = _data()
    D = _truth(emb)
    q, p, n, s, dqp, dqn = _arrays(_run("semihard", _ctx(labels, emb), **opts))
    other = labels[None, :] != labels[q][:, None]
    dq = D[q]
    beyond = other & (dq > dqp[:, None] + ATOL)
    band = beyond & (dq < dqp[:, None] + MARGIN - ATOL)
    # Where a band member certainly exists, the row must be semihard and inside the band.
    sure = band.any(1)
    assert sure.mean() > 0.3  # the fixture really exercises the band
    assert np.all(s[sure] == "semihard")
    semi = s == "semihard"
    dn = D[q, n]
    assert np.all(dn[semi] > dqp[semi] - ATOL) and np.all(dn[semi] < dqp[semi] + MARGIN + ATOL)
    # Beyond rows: no band member, and the nearest negative beyond d_qp.
    bey = s == "semihard-beyond"
    loose_band = other & (dq > dqp[:, None] - ATOL) & (dq < dqp[:, None] + MARGIN + ATOL)
    assert not np.any(band[bey].any(1))
    nearest_beyond = np.where(other & (dq > dqp[:, None] - ATOL), dq, np.inf).min(1)
    assert np.allclose(dn[bey], nearest_beyond[bey], atol=ATOL)
    assert np.all(loose_band[semi][np.arange(semi.sum()), n[semi]])
    if opts.get("band_pick") == "nearest":
        nearest_band = np.where(loose_band, dq, np.inf).min(1)
        assert np.allclose(dn[semi], nearest_band[semi], atol=ATOL)
    assert np.all(labels[n] != labels[q])


def test_semihard_beyond_fallback_with_separated_classes():
    # Classes far apart: every negative lies beyond d_qp + margin, so no band exists.
    labels, emb = _data(spread=0.05)
    emb = emb * 20
    D = _truth(emb)
    q, p, n, s, dqp, dqn = _arrays(_run("semihard", _ctx(labels, emb), candidates="knn", knn_k=N))
    assert np.all(s == "semihard-beyond")
    other = labels[None, :] != labels[q][:, None]
    assert np.allclose(D[q, n], np.where(other, D[q], np.inf).min(1), atol=ATOL)


def test_semihard_uniform_fallback_when_nothing_beyond():
    # Class 0: two clumps at x=0 and x=100; class 1 sits at x~1. A class-0 query at 0
    # with its farthest positive (at 100) has every negative closer than d_qp.
    rng = np.random.default_rng(1)
    labels = np.array([0] * 10 + [1] * 10)
    x = np.concatenate([np.zeros(5), np.full(5, 100.0), 1 + rng.random(10)])
    emb = np.stack([x, 0.01 * rng.standard_normal(20)], 1).astype(np.float32)
    ctx = _ctx(labels, emb)
    for opts in (dict(candidates="pool", pool_size=16), dict(candidates="knn", knn_k=19)):
        q, p, n, s, dqp, dqn = _arrays(_run("semihard", ctx, positive="farthest", **opts))
        near_clump = (labels[q] == 0) & (x[q] < 50)
        assert np.all(s[near_clump] == "semihard-uniform")
        assert np.all(labels[n[near_clump]] == 1)
        assert np.allclose(dqn, np.linalg.norm(emb[q] - emb[n], axis=1), atol=ATOL)
        assert not np.any(s[labels[q] == 1] == "semihard-uniform")


def test_hard_is_nearest_negative_of_the_pool():
    labels, emb = _data()
    ctx = _ctx(labels, emb)
    classes = ctx.classes
    queries = np.repeat(np.arange(N), 2)
    pool_size = 8
    block = get_strategy("hard", pool_size=pool_size).sample(ctx, queries, np.random.default_rng(5))
    # Replay the documented draw order: positives, then one pool per query (one chunk).
    replay = np.random.default_rng(5)
    uniform_positives(classes, queries, replay)
    pool = uniform_negatives(classes, np.repeat(queries, pool_size), replay).reshape(-1, pool_size)
    d = np.linalg.norm(emb[queries][:, None, :] - emb[pool], axis=2)
    assert np.all(block.strategy == "hard")
    assert np.all(np.any(pool == block.negatives[:, None], axis=1))
    assert np.allclose(block.d_qn, d.min(1), atol=ATOL)


@pytest.mark.parametrize("opts", [dict(candidates="knn", knn_k=N), dict(candidates="pool", pool_size=3000)])
def test_hard_is_global_nearest_negative_with_full_candidates(opts):
    labels, emb = _data()
    D = _truth(emb)
    q, p, n, s, dqp, dqn = _arrays(_run("hard", _ctx(labels, emb), **opts))
    other = labels[None, :] != labels[q][:, None]
    assert np.all(s == "hard")
    assert np.allclose(D[q, n], np.where(other, D[q], np.inf).min(1), atol=ATOL)


def test_hard_uniform_fallback_when_knn_sees_only_own_class():
    labels, emb = _data(spread=0.01)
    emb = emb * 50
    q, p, n, s, dqp, dqn = _arrays(_run("hard", _ctx(labels, emb), candidates="knn", knn_k=5))
    assert np.all(s == "hard-uniform")
    assert np.all(labels[n] != labels[q])


# (0.25, 1) and (0.05, 1) round differently per class than per driver block (e.g. 4 x round(7.5) = 32
# mined rows, against 31 over blocks of 60, 30 and 30 rows), so they pin that rounding is per class.
@pytest.mark.parametrize("share,tpq", [(0.0, 3), (0.3, 3), (0.5, 3), (1.0, 3), (0.25, 1), (0.05, 1)])
def test_mixed_share_is_rounded_per_class(share, tpq):
    labels, emb = _data()
    ctx = _ctx(labels, emb)
    df = _run("mixed", ctx, tpq=tpq, n_blocks=3, mined_share=share, mined_strategy="hard")
    s = df["strategy"].astype(str).to_numpy()
    # Definition: round(share * rows) of each class's rows are mined (one strategy call per class).
    rows_per_class = np.bincount(labels) * tpq
    assert (s != "uniform").sum() == sum(int(round(share * r)) for r in rows_per_class)
    q = df["query"].to_numpy()
    for c, rows in enumerate(rows_per_class):
        assert (s[labels[q] == c] != "uniform").sum() == int(round(share * rows))
    assert set(s) <= {"uniform", "hard", "hard-uniform"}
    q, p, n, _, dqp, dqn = _arrays(df)
    assert np.allclose(dqn, np.linalg.norm(emb[q] - emb[n], axis=1), atol=ATOL)


def test_farthest_positive_is_true_farthest():
    labels, emb = _data()
    D = _truth(emb)
    q, p, n, s, dqp, dqn = _arrays(_run("semihard", _ctx(labels, emb), positive="farthest"))
    same = (labels[None, :] == labels[q][:, None]) & (np.arange(N)[None, :] != q[:, None])
    assert np.all(p != q) and np.all(labels[p] == labels[q])
    assert np.allclose(D[q, p], np.where(same, D[q], -np.inf).max(1), atol=ATOL)


def test_relevance_never_picks_the_query():
    labels, emb = _data()
    ctx = _ctx(labels, emb)
    q, p, n, s, dqp, dqn = _arrays(_run("hard", ctx, tpq=5, positive="relevance"))
    assert np.all(p != q) and np.all(labels[p] == labels[q])


def test_relevance_draw_follows_capped_weights():
    # Class 0 on a line x = 0..29 (spread-out distances from the query at x = 0).
    labels = np.array([0] * 30 + [1] * 10)
    x = np.concatenate([np.arange(30.0), 100 + np.arange(10.0)])
    emb = np.stack([x, np.zeros_like(x)], 1).astype(np.float32)
    ctx = _ctx(labels, emb)
    cap_q, query, draws = 0.5, 0, 40000
    block = get_strategy("hard", positive="relevance", relevance_cap=cap_q).sample(
        ctx, np.full(draws, query), np.random.default_rng(0)
    )
    members = np.arange(1, 30)
    d = x[members]
    w = np.minimum(d, np.quantile(d, cap_q))  # cap = 15
    expected = w / w.sum()
    got = np.bincount(block.positives, minlength=40)[members] / draws
    assert not np.any(block.positives == query)
    assert np.abs(got - expected).max() < 0.006
    # Uncapped (w = d) would differ by far more than the tolerance.
    assert np.abs(d / d.sum() - expected).max() > 0.02


@pytest.mark.parametrize(
    "name,opts",
    [("semihard", {}), ("semihard", dict(candidates="knn", knn_k=40)), ("hard", dict(positive="farthest")),
     ("mixed", dict(positive="relevance", candidates="knn", knn_k=20, mined_strategy="semihard"))],
)
def test_recorded_distances_match_recomputed(name, opts):
    labels, emb = _data()
    q, p, n, s, dqp, dqn = _arrays(_run(name, _ctx(labels, emb), **opts))
    e = emb.astype(np.float64)
    assert np.allclose(dqp, np.linalg.norm(e[q] - e[p], axis=1), rtol=1e-5, atol=1e-5)
    assert np.allclose(dqn, np.linalg.norm(e[q] - e[n], axis=1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,opts",
                         [("semihard", {}), ("mixed", dict(positive="relevance", mined_strategy="semihard"))])
def test_rows_depend_on_seed_and_epoch_not_on_blocks_or_scheduler(name, opts):
    labels, emb = _data()
    ref = _run(name, _ctx(labels, emb, epoch=2), n_blocks=1, **opts)
    # Seeding is per class, so regrouping the classes into blocks or threads changes nothing.
    pd.testing.assert_frame_equal(ref, _run(name, _ctx(labels, emb, epoch=2), n_blocks=4, dask_scheduler="threads",
                                            **opts))
    cols = ["query", "positive", "negative"]
    for other in (_ctx(labels, emb, epoch=3), _ctx(labels, emb, epoch=2, seed=8)):
        assert not ref[cols].equals(_run(name, other, **opts)[cols])


def test_driver_table_is_valid():
    labels, emb = _data()
    ids = np.arange(N) * 10 + 5
    tpq = 2
    for name in ("semihard", "hard", "mixed"):
        table = sample_triplets(_ctx(labels, emb), get_strategy(name, mined_strategy="semihard"), ids,
                                ListSettings(triplets_per_query=tpq, n_blocks=4, dask_scheduler="synchronous"))
        assert isinstance(table, pa.Table) and table.schema.equals(TRIPLET_SCHEMA)
        df = table.to_pandas()
        assert len(df) == N * tpq
        pos = {v: i for i, v in enumerate(ids)}
        q = df["query"].map(pos).to_numpy()
        p = df["positive"].map(pos).to_numpy()
        n = df["negative"].map(pos).to_numpy()
        assert np.all(np.bincount(q, minlength=N) == tpq)
        assert np.all(p != q) and np.all(labels[p] == labels[q]) and np.all(labels[n] != labels[q])
        assert np.all(df["query_label"].to_numpy() == labels[q])
        assert np.all(df["negative_label"].to_numpy() == labels[n])
        assert np.isfinite(df["d_qp"]).all() and np.isfinite(df["d_qn"]).all()


def test_options_coerced_from_strings():
    s = get_strategy("mixed", pool_size="16", knn_k="7", mined_share="0.25", relevance_cap="1")
    assert (s.pool_size, s.knn_k, s.mined_share, s.relevance_cap) == (16, 7, 0.25, 1.0)


@pytest.mark.parametrize(
    "opts,setting",
    [(dict(positive="closest"), "positive"), (dict(candidates="all"), "candidates"),
     (dict(pool_size=0), "pool_size"), (dict(knn_k="x"), "knn_k"), (dict(mined_share=1.5), "mined_share"),
     (dict(mined_strategy="mixed"), "mined_strategy"), (dict(relevance_cap=0), "relevance_cap"),
     (dict(band_pick="any"), "band_pick"), (dict(pool_size=2.5), "pool_size")],
)
def test_invalid_options_name_the_setting(opts, setting):
    with pytest.raises(ConfigError, match=rf"\[TripletList\] {setting}\b"):
        get_strategy("semihard", **opts)


def test_missing_or_misaligned_embeddings():
    labels, emb = _data()
    q = np.arange(N)
    rng = np.random.default_rng(0)
    classes = ClassMembers.from_labels(labels)
    for name in ("semihard", "hard", "mixed"):
        s = get_strategy(name)
        with pytest.raises(ConfigError, match="strategy"):
            s.sample(SamplingContext(classes, epoch=1, seed=0), q, rng)
        with pytest.raises(ConfigError, match="aligned"):
            s.sample(_ctx(labels, emb[:-1]), q, rng)
        with pytest.raises(ConfigError, match="aligned"):
            s.sample(_ctx(labels, emb[:, 0]), q, rng)
    with pytest.raises(ConfigError, match="margin"):
        get_strategy("semihard").sample(_ctx(labels, emb, margin=-1.0), q, rng)
    bad = emb.copy()
    bad[4, 1] = np.nan
    with pytest.raises(TrainingError, match="NaN"):
        get_strategy("hard").sample(_ctx(labels, bad), q, rng)


def test_each_class_is_sampled_with_its_class_rng_then_shuffled():
    # The driver's contract with strategies: one call per class with class_rng(seed, epoch, label),
    # classes in label order, then one shuffle of all rows with shuffle_rng(seed, epoch).
    labels, emb = _data()
    ctx = _ctx(labels, emb, epoch=2, seed=5)
    strategy = get_strategy("semihard", positive="relevance")
    table = sample_triplets(ctx, strategy, np.arange(N),
                            ListSettings(triplets_per_query=2, n_blocks=3, dask_scheduler="synchronous"))
    parts = [strategy.sample(ctx, np.repeat(ctx.classes.members(c), 2), class_rng(5, 2, c)) for c in range(N_CLASSES)]
    perm = shuffle_rng(5, 2).permutation(2 * N)
    for column, field in (("query", "queries"), ("positive", "positives"), ("negative", "negatives")):
        expected = np.concatenate([getattr(part, field) for part in parts])[perm]
        assert np.array_equal(table[column].to_numpy(), expected), column


def _digest(df: pd.DataFrame) -> str:
    ids = df[["query", "positive", "negative"]].to_numpy(np.int64)
    names = "|".join(df["strategy"].astype(str)).encode()
    return hashlib.sha256(ids.tobytes() + names).hexdigest()[:16]


@pytest.mark.parametrize("name,opts", list(MINED_DIGESTS))
def test_mined_lists_are_pinned(name, opts):
    """The draw order of every mined rule, pinned: refactors must not move a single draw."""
    labels, emb = _data()
    df = _run(name, _ctx(labels, emb, epoch=2, seed=3), **dict(opts))
    assert _digest(df) == MINED_DIGESTS[(name, opts)]


def test_summary_with_known_values():
    df = pd.DataFrame(
        {
            "strategy": pd.Categorical(["semihard", "semihard", "hard", "uniform"]),
            "d_qp": np.array([1.0, 1.0, 2.0, np.nan], np.float32),
            "d_qn": np.array([1.2, 2.0, 1.0, np.nan], np.float32),
        }
    )
    out = summarize_triplets(df, margin=0.5)
    assert out["rows"] == 4 and out["rows_with_distances"] == 3
    assert out["strategy_share"] == {"hard": 0.25, "semihard": 0.5, "uniform": 0.25}
    assert math.isclose(out["satisfied_share"], 1 / 3) and math.isclose(out["active_share"], 2 / 3)
    assert math.isclose(out["quantiles"]["d_qp"]["p50"], 1.0)
    assert math.isclose(out["quantiles"]["d_qn_minus_d_qp"]["p50"], 0.2, rel_tol=1e-5)
    assert out["by_strategy"]["hard"]["active_share"] == 1.0
    assert math.isnan(out["by_strategy"]["uniform"]["active_share"])


def test_summary_of_uniform_list_is_nan_safe():
    labels, emb = _data()
    ctx = SamplingContext(ClassMembers.from_labels(labels), epoch=0, seed=0)
    df = sample_triplets(ctx, get_strategy("uniform"), np.arange(N),
                         ListSettings(triplets_per_query=1, dask_scheduler="synchronous"))
    df = df.to_pandas()
    out = summarize_triplets(df, margin=1.0)
    assert out["rows"] == N and out["strategy_share"] == {"uniform": 1.0}
    assert out["rows_with_distances"] == 0
    assert math.isnan(out["satisfied_share"]) and math.isnan(out["active_share"])
    assert all(math.isnan(v) for v in out["quantiles"]["d_qn"].values())
    empty = summarize_triplets(df.iloc[:0], margin=1.0)
    assert empty["rows"] == 0 and empty["strategy_share"] == {}


def test_relevance_with_coincident_members_is_uniform_over_others():
    labels = np.array([0] * 5 + [1] * 5)
    emb = np.zeros((10, 3), np.float32)
    emb[5:] = 4.0
    ctx = _ctx(labels, emb)
    block = get_strategy("hard", positive="relevance").sample(ctx, np.full(20000, 2), np.random.default_rng(0))
    counts = np.bincount(block.positives, minlength=10)
    assert counts[2] == 0 and counts[5:].sum() == 0
    assert np.abs(counts[[0, 1, 3, 4]] / 20000 - 0.25).max() < 0.02
    assert np.all(block.d_qp == 0)


def test_threaded_scheduler_matches_synchronous():
    labels, emb = _data()
    ctx = _ctx(labels, emb)
    s = get_strategy("mixed", positive="relevance", candidates="knn", knn_k=30, mined_strategy="semihard")
    a = sample_triplets(ctx, s, np.arange(N),
                        ListSettings(triplets_per_query=1, n_blocks=4, dask_scheduler="synchronous"))
    b = sample_triplets(ctx, s, np.arange(N), ListSettings(triplets_per_query=1, n_blocks=4, dask_scheduler="threads"))
    assert a.equals(b)
