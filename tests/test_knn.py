"""Exact kNN search checked against a float64 brute-force reference: results, exclusions,
inputs and backends (ties and canonical order: test_knn_ties.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.knn import knn_search, limits
from tests.knn_reference import BACKENDS, calls, check, data


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("farthest", [False, True])
@pytest.mark.parametrize("block_size", [7, 4096])
def test_matches_brute_force(backend, farthest, block_size):
    queries, database = data()
    result = knn_search(queries, database, 5, farthest=farthest, backend=backend, block_size=block_size)
    check(result, queries, database, 5, farthest)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("farthest", [False, True])
def test_exclude_self_when_queries_are_database_rows(backend, farthest):
    _, database = data()
    rows = np.array([0, 5, 17, 17, 100, 42, 3, 99, 64, 8, 1])
    queries = database[rows]
    exclude = rows.copy()
    exclude[[2, 6]] = -1  # no exclusion for these: they must find themselves at distance 0
    result = knn_search(queries, database, 6, farthest=farthest, exclude=exclude, backend=backend, block_size=4)
    check(result, queries, database, 6, farthest, exclude)
    if not farthest:
        assert result[1][2, 0] == 17 and result[1][6, 0] == 3
        assert result[0][2, 0] == 0.0  # clamped, never NaN from a tiny negative


@pytest.mark.parametrize("backend", BACKENDS)
def test_exclude_with_k_equal_to_database_minus_one(backend):
    queries, database = data(n_queries=9, n_database=10)
    exclude = np.arange(9, dtype=np.int64)
    result = knn_search(queries, database, 9, exclude=exclude, backend=backend, block_size=4)
    check(result, queries, database, 9, exclude=exclude)


@pytest.mark.parametrize("farthest", [False, True])
def test_torch_merges_database_tiles(monkeypatch, farthest):
    # Tiles of 20 columns over 101 rows: the top k is merged across six tiles, the last one short.
    monkeypatch.setattr(limits, "TORCH_TILE_ELEMENTS", 7 * 20)
    tiles = calls(monkeypatch, torch, "addmm")
    queries, database = data()
    exclude = np.random.default_rng(1).integers(-1, len(database), len(queries))
    result = knn_search(queries, database, 8, farthest=farthest, exclude=exclude, backend="torch", block_size=7)
    assert len(tiles) == 8 * 6  # 8 query blocks x 6 database tiles
    check(result, queries, database, 8, farthest, exclude)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_are_broken_by_index_and_backends_agree(backend):
    base = np.random.default_rng(2).standard_normal((4, 3)).astype(np.float32)
    database = np.repeat(base, 3, axis=0)  # every point three times
    dist, idx = knn_search(base, database, 3, backend=backend, block_size=3)
    np.testing.assert_array_equal(idx, np.arange(12).reshape(4, 3))
    np.testing.assert_array_equal(dist, 0.0)


def test_backends_agree_and_auto_works():
    queries, database = data(seed=3)
    torch_result = knn_search(queries, database, 4, backend="torch", device="cpu")
    auto_result = knn_search(queries, database, 4)
    np.testing.assert_array_equal(torch_result[1], auto_result[1])
    np.testing.assert_allclose(torch_result[0], auto_result[0], rtol=1e-5)


def test_accepts_float64_and_no_queries():
    queries, database = data()
    dist, idx = knn_search(queries.astype(np.float64), database.astype(np.float64), 3, backend="torch")
    check((dist, idx), queries, database, 3)
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
    queries, database = data()
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


def test_auto_searches_large_k_in_float64_on_the_cpu_and_faiss_refuses_a_gpu():
    from pipeline.knn.search import resolve_backend

    assert resolve_backend("auto", None, 6000, 60_000) == "float64"  # R of the full Fashion-MNIST
    assert resolve_backend("auto", "cpu", 500, 100_000) in ("faiss", "torch")  # R of Tiny ImageNet
    assert resolve_backend("auto", "cpu", limits.FLOAT64_FROM_K - 1, 1000) in ("faiss", "torch")
    assert resolve_backend("auto", "cuda", 6000, 60_000) == "torch"
    with pytest.raises(ConfigError, match="backend 'faiss' runs on the CPU only, but device='cuda'"):
        knn_search(*data(), 3, backend="faiss", device="cuda")
