"""Canonical kNN results: ties broken by (exact distance, index) whatever the backend, the
block size and the tie-group size, including collapsed embeddings and near-duplicates."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from pipeline.knn import canonical, knn_search, limits
from pipeline.knn.database import Database
from pipeline.knn.exact import exact_squared
from tests.knn_reference import BACKENDS, FLOAT32_BACKENDS, calls, check, reference


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
        monkeypatch.setattr(limits, "SCAN_ELEMENTS", 2 * 40)
        monkeypatch.setattr(limits, "DEDUPLICATE_ABOVE", 4)
        monkeypatch.setattr(limits, "EXACT_CHUNK_ROWS", 3)
    # No wider candidate search first: the rescan itself is what this test covers.
    monkeypatch.setattr(limits, "SPARE_GROWTH", 1)
    rescans = calls(monkeypatch, canonical, "rescan")
    deduplications = calls(monkeypatch, Database, "distinct")
    rng = np.random.default_rng(7)
    vector = rng.standard_normal(16).astype(np.float32)
    database = np.tile(vector, (40, 1))
    queries = np.vstack([vector, rng.standard_normal((4, 16)).astype(np.float32)])
    dist, idx = knn_search(queries, database, 7, farthest=farthest, backend=backend, block_size=2)
    # The tie group (all 40 rows) passes the candidates, so every query block is rescanned.
    assert len(rescans) == 3
    assert bool(deduplications) == small_steps
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
    check((dist, idx), queries, database, 12, farthest)
    exclude = np.array([0, -1, 11])
    dist, idx = knn_search(queries, database, 11, farthest=farthest, exclude=exclude, backend=backend)
    check((dist, idx), queries, database, 11, farthest, exclude)


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
    _, ref_idx, _ = reference(queries, database, k, farthest, exclude)
    clear = _clear_of_ties(queries, database, k, farthest, exclude)
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(faiss_idx[clear], ref_idx[clear])


@pytest.mark.parametrize("backend", BACKENDS)
def test_near_duplicates_match_reference_even_with_few_candidates(monkeypatch, backend):
    # No spare candidates, and none fetched later: every tie group crossing the k-th place forces a rescan.
    monkeypatch.setattr(limits, "EXTRA_CANDIDATES", 0)
    monkeypatch.setattr(limits, "SPARE_GROWTH", 1)
    rescans = calls(monkeypatch, canonical, "rescan")
    queries, database = _near_duplicates(seed=10)
    for farthest in (False, True):
        _, idx = knn_search(queries, database, 3, farthest=farthest, backend=backend, block_size=16)
        _, ref_idx, _ = reference(queries, database, 3, farthest)
        clear = _clear_of_ties(queries, database, 3, farthest, None)
        np.testing.assert_array_equal(idx[clear], ref_idx[clear])
    assert rescans


def test_exact_squared_does_not_depend_on_the_batch():
    rng = np.random.default_rng(11)
    queries = rng.standard_normal((37, 33)).astype(np.float32)
    rows = rng.standard_normal((37, 33)).astype(np.float32)
    together = exact_squared(queries, rows)
    alone = np.array([exact_squared(queries[i : i + 1], rows[i : i + 1])[0] for i in range(37)])
    broadcast = np.array([exact_squared(queries[i][None], rows[i : i + 1])[0] for i in range(37)])
    np.testing.assert_array_equal(together, alone)
    np.testing.assert_array_equal(together, broadcast)
    np.testing.assert_allclose(together, ((queries.astype(np.float64) - rows) ** 2).sum(1), rtol=1e-14)


def test_distinct_merges_only_identical_vectors_among_the_given_rows():
    # Rows 0..5 share one key, as +v and -v do for a query at the origin: a merge by
    # key alone would give them one distance source; only bit-identical rows may merge.
    rng = np.random.default_rng(12)
    v, w = rng.standard_normal((2, 8)).astype(np.float32)
    vectors = np.array([v, -v, v, -v, v, w, w, v], dtype=np.float32)
    rows = np.array([0, 1, 2, 3, 4, 6, 7])  # row 5 not given: it must not be a source
    approx = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 1.0])
    ids, first = Database(vectors, farthest=False).distinct(rows, approx)
    np.testing.assert_array_equal(vectors[first[ids]], vectors[rows])
    assert set(first) <= set(rows)
    # The copies of v (the key run's first row) merge; -v, though tied, stays apart
    # from them (its copies may stay unmerged: that only costs a distance).
    assert ids[0] == ids[2] == ids[4] == ids[6]
    assert ids[1] != ids[0] and ids[3] != ids[0] and ids[5] not in ids[:5]


def test_collapsed_groups_with_equidistant_distinct_vectors(monkeypatch):
    # The query at the origin sees +v and -v (each repeated) at exactly one distance:
    # ranking per distinct vector must still keep every row's own index order.
    monkeypatch.setattr(limits, "DEDUPLICATE_ABOVE", 4)
    monkeypatch.setattr(limits, "SPARE_GROWTH", 1)  # straight to the rescan, which ranks per distinct vector
    deduplications = calls(monkeypatch, Database, "distinct")
    rng = np.random.default_rng(13)
    v = rng.standard_normal(8).astype(np.float32)
    database = np.vstack([np.tile(v, (20, 1)), np.tile(-v, (20, 1)), 3 * rng.standard_normal((20, 8))])
    database = database[rng.permutation(60)].astype(np.float32)
    queries = np.vstack([np.zeros(8), v, rng.standard_normal(8)]).astype(np.float32)
    for backend in ["torch"] + (["faiss"] if importlib.util.find_spec("faiss") else []):
        for farthest in (False, True):
            _, idx = knn_search(queries, database, 30, farthest=farthest, backend=backend)
            _, ref_idx, _ = reference(queries, database, 30, farthest)
            np.testing.assert_array_equal(idx, ref_idx)
    assert deduplications


@pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="faiss not installed")
def test_faiss_nearest_search_copies_no_database(monkeypatch):
    import faiss

    def refuse(*args):
        raise AssertionError("IndexFlatL2 copies the database")

    monkeypatch.setattr(faiss, "IndexFlatL2", refuse)
    queries, database = np.ones((2, 4), dtype=np.float32), np.arange(20, dtype=np.float32).reshape(5, 4)
    _, idx = knn_search(queries, database, 2, backend="faiss")
    np.testing.assert_array_equal(idx, [[0, 1], [0, 1]])


@pytest.mark.parametrize("backend", FLOAT32_BACKENDS)
def test_spare_candidates_grow_with_k(monkeypatch, backend):
    # Crowded distances at the k-th place (one far row widens the error bound to ~140
    # rows' worth): a fixed handful of spares cannot pass the near-tie and every query
    # is rescanned; spares in proportion to k do, with the same canonical answer.
    rng = np.random.default_rng(14)
    database = rng.uniform(-1, 1, (20_000, 2)).astype(np.float32)
    database[0] = 30.0
    queries = rng.uniform(-0.2, 0.2, (6, 2)).astype(np.float32)
    _, ref_idx, _ = reference(queries, database, 2000)
    rescans = calls(monkeypatch, canonical, "rescan")
    answers = []
    monkeypatch.setattr(limits, "SPARE_GROWTH", 1)  # no wider search before a rescan
    for fraction in (0.0, 0.25):
        monkeypatch.setattr(limits, "EXTRA_FRACTION", fraction)
        rescans.clear()
        answers.append(knn_search(queries, database, 2000, backend=backend)[1])
        np.testing.assert_array_equal(answers[-1], ref_idx)
        assert bool(rescans) == (fraction == 0.0)
    # With the wider search (the default), too few spares cost one more search, not a rescan.
    monkeypatch.undo()
    rescans = calls(monkeypatch, canonical, "rescan")
    monkeypatch.setattr(limits, "EXTRA_FRACTION", 0.0)
    np.testing.assert_array_equal(knn_search(queries, database, 2000, backend=backend)[1], ref_idx)
    assert not rescans
