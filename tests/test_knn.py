"""Exact kNN search checked against a float64 brute-force reference."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import pipeline.knn as knn
from pipeline.errors import ConfigError
from pipeline.knn import knn_search

BACKENDS = [
    pytest.param(
        "faiss",
        marks=pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="faiss not installed"),
    ),
    "torch",
]


def _data(n_queries: int = 53, n_database: int = 101, dim: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((n_queries, dim)).astype(np.float32),
        rng.standard_normal((n_database, dim)).astype(np.float32),
    )


def _reference(queries, database, k, farthest=False, exclude=None):
    """Sorted true distances (float64) and the full distance matrix."""
    d = np.sqrt(((queries[:, None, :].astype(np.float64) - database[None].astype(np.float64)) ** 2).sum(-1))
    ranked = d.copy()
    if exclude is not None:
        rows = np.flatnonzero(exclude >= 0)
        ranked[rows, exclude[rows]] = -np.inf if farthest else np.inf
    order = np.argsort(-ranked if farthest else ranked, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, 1), order, d


def _check(result, queries, database, k, farthest=False, exclude=None):
    dist, idx = result
    assert dist.shape == idx.shape == (len(queries), k)
    assert dist.dtype == np.float32 and idx.dtype == np.int64
    ref_dist, ref_idx, full = _reference(queries, database, k, farthest, exclude)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-5, atol=1e-5)
    # Each reported distance belongs to the reported row, whatever the tie order.
    np.testing.assert_allclose(dist, np.take_along_axis(full, idx, 1), rtol=1e-5, atol=1e-5)
    assert (np.diff(dist, axis=1) <= 0 if farthest else np.diff(dist, axis=1) >= 0).all()
    assert all(len(set(row)) == k for row in idx)
    if exclude is not None:
        assert not (idx == exclude[:, None]).any()
    # Random Gaussian data has no near-ties, so the rows themselves must match too.
    np.testing.assert_array_equal(idx, ref_idx)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("farthest", [False, True])
@pytest.mark.parametrize("block_size", [7, 4096])
def test_matches_brute_force(backend, farthest, block_size):
    queries, database = _data()
    result = knn_search(queries, database, 5, farthest=farthest, backend=backend, block_size=block_size)
    _check(result, queries, database, 5, farthest)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("farthest", [False, True])
def test_exclude_self_when_queries_are_database_rows(backend, farthest):
    _, database = _data()
    rows = np.array([0, 5, 17, 17, 100, 42, 3, 99, 64, 8, 1])
    queries = database[rows]
    exclude = rows.copy()
    exclude[[2, 6]] = -1  # no exclusion for these: they must find themselves at distance 0
    result = knn_search(queries, database, 6, farthest=farthest, exclude=exclude, backend=backend, block_size=4)
    _check(result, queries, database, 6, farthest, exclude)
    if not farthest:
        assert result[1][2, 0] == 17 and result[1][6, 0] == 3
        assert result[0][2, 0] == 0.0  # clamped, never NaN from a tiny negative


@pytest.mark.parametrize("backend", BACKENDS)
def test_exclude_with_k_equal_to_database_minus_one(backend):
    queries, database = _data(n_queries=9, n_database=10)
    exclude = np.arange(9, dtype=np.int64)
    result = knn_search(queries, database, 9, exclude=exclude, backend=backend, block_size=4)
    _check(result, queries, database, 9, exclude=exclude)


@pytest.mark.parametrize("farthest", [False, True])
def test_torch_merges_database_tiles(monkeypatch, farthest):
    # Tiles of 20 columns over 101 rows: the top k is merged across six tiles, the last one short.
    monkeypatch.setattr(knn, "_TORCH_TILE_ELEMENTS", 7 * 20)
    queries, database = _data()
    exclude = np.random.default_rng(1).integers(-1, len(database), len(queries))
    result = knn_search(queries, database, 8, farthest=farthest, exclude=exclude, backend="torch", block_size=7)
    _check(result, queries, database, 8, farthest, exclude)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_are_broken_by_index_and_backends_agree(backend):
    base = np.random.default_rng(2).standard_normal((4, 3)).astype(np.float32)
    database = np.repeat(base, 3, axis=0)  # every point three times
    dist, idx = knn_search(base, database, 3, backend=backend, block_size=3)
    np.testing.assert_array_equal(idx, np.arange(12).reshape(4, 3))
    np.testing.assert_array_equal(dist, 0.0)


def test_backends_agree_and_auto_works():
    queries, database = _data(seed=3)
    torch_result = knn_search(queries, database, 4, backend="torch", device="cpu")
    auto_result = knn_search(queries, database, 4)
    np.testing.assert_array_equal(torch_result[1], auto_result[1])
    np.testing.assert_allclose(torch_result[0], auto_result[0], rtol=1e-5)


def test_accepts_float64_and_no_queries():
    queries, database = _data()
    dist, idx = knn_search(queries.astype(np.float64), database.astype(np.float64), 3, backend="torch")
    _check((dist, idx), queries, database, 3)
    dist, idx = knn_search(queries[:0], database, 3)
    assert dist.shape == idx.shape == (0, 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"queries": np.zeros(4)}, "2-D"),
        ({"database": np.zeros((5, 3))}, "dimension"),
        ({"k": 11}, "at most 10"),
        ({"k": 10, "exclude": np.full(4, -1)}, "at most 9"),
        ({"k": 0}, "positive integer"),
        ({"exclude": np.zeros(3, dtype=int)}, "shape"),
        ({"exclude": np.full(4, 10)}, r"\[-1, 9\]"),
        ({"backend": "annoy"}, "backend"),
        ({"block_size": 0}, "block_size"),
        ({"queries": np.full((4, 2), np.nan)}, "NaN"),
    ],
)
def test_invalid_inputs_raise_config_error(kwargs, message):
    args = {"queries": np.zeros((4, 2)), "database": np.ones((10, 2)), "k": 3} | kwargs
    with pytest.raises(ConfigError, match=message):
        knn_search(args.pop("queries"), args.pop("database"), args.pop("k"), **args)


@pytest.mark.parametrize("backend", BACKENDS)
def test_read_only_inputs_do_not_warn(backend, recwarn):
    queries, database = _data()
    queries.flags.writeable = False
    database.flags.writeable = False
    knn_search(queries, database, 3, backend=backend)
    assert not [w for w in recwarn if "writable" in str(w.message)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_small_distances_are_accurate_despite_large_norms(backend):
    # ||q||^2 ~ 1e5 here, so the float32 expansion alone would be off by ~0.1 in squared distance.
    rng = np.random.default_rng(4)
    database = (50.0 + rng.standard_normal((200, 32))).astype(np.float32)
    queries = database[:40].copy()
    queries[20:] += np.float32(1e-3) * rng.standard_normal((20, 32)).astype(np.float32)
    dist, idx = knn_search(queries, database, 2, backend=backend)
    np.testing.assert_array_equal(idx[:, 0], np.arange(40))
    np.testing.assert_array_equal(dist[:20, 0], 0.0)
    true = np.linalg.norm(queries[20:].astype(np.float64) - database[20:40], axis=1)
    np.testing.assert_allclose(dist[20:, 0], true, rtol=1e-4)


def test_unknown_torch_device_raises_config_error():
    with pytest.raises(ConfigError, match="device"):
        knn_search(np.zeros((3, 2)), np.ones((5, 2)), 2, backend="torch", device="tpu9")


# --- Canonical results: (exact distance, index) whatever the backend and the tie-group size ---


def _tie_group_data():
    """10 scattered rows plus 50 identical ones (positions shuffled), and queries for both sides."""
    rng = np.random.default_rng(6)
    database = np.empty((60, 8), dtype=np.float32)
    tied = rng.permutation(60)[:50]
    database[:] = rng.standard_normal((60, 8)).astype(np.float32)
    database[tied] = np.full(8, 10.0, dtype=np.float32) + np.float32(0.3)
    queries = np.vstack(
        [
            database[tied[0]],  # the tied vector itself: the whole group at distance 0
            database[tied[0]] + np.float32(0.01),  # near the group: all 50 nearest, tied
            np.zeros(8, dtype=np.float32),  # near the others: all 50 farthest, tied
        ]
    ).astype(np.float32)
    return queries, database, np.sort(tied)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tie_group_larger_than_k_keeps_its_lowest_indices(backend):
    queries, database, tied = _tie_group_data()
    _, idx = knn_search(queries[:2], database, 5, backend=backend, block_size=2)
    np.testing.assert_array_equal(idx, np.tile(tied[:5], (2, 1)))
    _, idx = knn_search(queries[2:], database, 5, farthest=True, backend=backend)
    np.testing.assert_array_equal(idx, tied[None, :5])
    # Excluding a tied row (the lowest, then the third) moves the cut one row further.
    for drop in (tied[0], tied[2]):
        expected = np.tile(np.setdiff1d(tied, [drop])[:5], (3, 1))
        exclude = np.full(3, drop)
        _, near = knn_search(queries, database, 5, exclude=exclude, backend=backend)
        _, far = knn_search(queries, database, 5, farthest=True, exclude=exclude, backend=backend)
        np.testing.assert_array_equal(near[:2], expected[:2])
        np.testing.assert_array_equal(far[2:], expected[2:])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("farthest", [False, True])
@pytest.mark.parametrize("small_steps", [False, True])
def test_collapsed_embedding_returns_lowest_indices(monkeypatch, backend, farthest, small_steps):
    if small_steps:
        # Rescans in groups of 2 queries x steps of 5 rows, ranked per distinct vector.
        monkeypatch.setattr(knn, "_SCAN_ELEMENTS", 2 * 40)
        monkeypatch.setattr(knn, "_DEDUPLICATE_ABOVE", 4)
        monkeypatch.setattr(knn, "_EXACT_CHUNK_ROWS", 3)
    rng = np.random.default_rng(7)
    vector = rng.standard_normal(16).astype(np.float32)
    database = np.tile(vector, (40, 1))
    queries = np.vstack([vector, rng.standard_normal((4, 16)).astype(np.float32)])
    dist, idx = knn_search(queries, database, 7, farthest=farthest, backend=backend, block_size=2)
    np.testing.assert_array_equal(idx, np.tile(np.arange(7), (5, 1)))
    np.testing.assert_allclose(dist, np.linalg.norm(queries - vector, axis=1)[:, None].repeat(7, 1), rtol=1e-6)
    exclude = np.array([0, 3, -1, 39, 6])
    _, idx = knn_search(queries, database, 7, farthest=farthest, exclude=exclude, backend=backend)
    for row, skip in zip(idx, exclude):
        np.testing.assert_array_equal(row, [i for i in range(8) if i != skip][:7])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("farthest", [False, True])
def test_k_equal_to_database_size_with_ties(backend, farthest):
    # No (k + 1)-th candidate exists: every row is returned, in canonical order.
    database = np.repeat(np.random.default_rng(8).standard_normal((3, 4)).astype(np.float32), 4, axis=0)
    queries = database[[0, 5, 11]]
    dist, idx = knn_search(queries, database, 12, farthest=farthest, backend=backend)
    _check((dist, idx), queries, database, 12, farthest)
    exclude = np.array([0, -1, 11])
    dist, idx = knn_search(queries, database, 11, farthest=farthest, exclude=exclude, backend=backend)
    _check((dist, idx), queries, database, 11, farthest, exclude)


def _near_duplicates(seed: int = 9):
    """Rows repeated 2-6 times with 1e-7 noise (many become bit-identical in float32), shuffled."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((40, 24))
    database = np.repeat(base, rng.integers(2, 7, len(base)), axis=0)
    database = database + 1e-7 * rng.standard_normal(database.shape)
    database = database[rng.permutation(len(database))].astype(np.float32)
    queries = np.vstack([rng.standard_normal((30, 24)), database[:30]]).astype(np.float32)
    return queries, database


def _clear_of_ties(queries, database, k, farthest, exclude):
    """Queries whose float64 reference ranking has no near-tie among its first k + 1 places.

    Bit-identical rows tie exactly (gap 0) and are ordered by index in any float64
    computation; distinct rows (even 1e-7 apart) differ far beyond float64 rounding.
    """
    squared = ((queries[:, None, :].astype(np.float64) - database[None].astype(np.float64)) ** 2).sum(-1)
    ranked = -squared if farthest else squared
    if exclude is not None:
        rows = np.flatnonzero(exclude >= 0)
        ranked[rows, exclude[rows]] = np.inf
    top = np.sort(ranked, axis=1)[:, : k + 1]
    gaps = np.diff(top, axis=1)
    return ((gaps == 0) | (gaps > 1e-12 * np.abs(top[:, 1:]))).all(axis=1)


@pytest.mark.parametrize("farthest", [False, True])
@pytest.mark.parametrize("with_exclude", [False, True])
def test_backends_agree_exactly_on_near_duplicates(farthest, with_exclude):
    if importlib.util.find_spec("faiss") is None:
        pytest.skip("faiss not installed")
    queries, database = _near_duplicates()
    exclude = np.r_[np.full(30, -1), np.arange(30)] if with_exclude else None
    k = 8
    faiss_dist, faiss_idx = knn_search(queries, database, k, farthest=farthest, exclude=exclude, backend="faiss")
    for block_size in (5, 4096):
        torch_dist, torch_idx = knn_search(
            queries, database, k, farthest=farthest, exclude=exclude, backend="torch", block_size=block_size
        )
        np.testing.assert_array_equal(torch_idx, faiss_idx)
        np.testing.assert_allclose(torch_dist, faiss_dist, rtol=1e-5, atol=1e-6)
    # Against float64 brute force ordered by (distance, index), where that reference is unambiguous.
    _, ref_idx, _ = _reference(queries, database, k, farthest, exclude)
    clear = _clear_of_ties(queries, database, k, farthest, exclude)
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(faiss_idx[clear], ref_idx[clear])


@pytest.mark.parametrize("backend", BACKENDS)
def test_near_duplicates_match_reference_even_with_few_candidates(monkeypatch, backend):
    # No spare candidates: every tie group crossing the k-th place forces a rescan.
    monkeypatch.setattr(knn, "_EXTRA_CANDIDATES", 0)
    queries, database = _near_duplicates(seed=10)
    for farthest in (False, True):
        dist, idx = knn_search(queries, database, 3, farthest=farthest, backend=backend, block_size=16)
        _, ref_idx, _ = _reference(queries, database, 3, farthest)
        clear = _clear_of_ties(queries, database, 3, farthest, None)
        np.testing.assert_array_equal(idx[clear], ref_idx[clear])


def test_exact_squared_does_not_depend_on_the_batch():
    rng = np.random.default_rng(11)
    queries = rng.standard_normal((37, 33)).astype(np.float32)
    rows = rng.standard_normal((37, 33)).astype(np.float32)
    together = knn._exact_squared(queries, rows)
    alone = np.array([knn._exact_squared(queries[i : i + 1], rows[i : i + 1])[0] for i in range(37)])
    broadcast = np.array([knn._exact_squared(queries[i][None], rows[i : i + 1])[0] for i in range(37)])
    np.testing.assert_array_equal(together, alone)
    np.testing.assert_array_equal(together, broadcast)
    np.testing.assert_allclose(together, ((queries.astype(np.float64) - rows) ** 2).sum(1), rtol=1e-14)
