"""Shared by the kNN tests: test data, a float64 brute-force reference and a call spy."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

# faiss is optional: its cases are skipped where it is not installed.
BACKENDS = [
    pytest.param(
        "faiss",
        marks=pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="faiss not installed"),
    ),
    "torch",
    "float64",
]
# The backends whose keys are float32 expansions, crowded with near ties at large k.
FLOAT32_BACKENDS = BACKENDS[:2]


def data(n_queries: int = 53, n_database: int = 101, dim: int = 12, seed: int = 0):
    """Seeded Gaussian float32 ``(queries, database)``: no near-ties, so the true ranking is unambiguous."""
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((n_queries, dim)).astype(np.float32),
        rng.standard_normal((n_database, dim)).astype(np.float32),
    )


def reference(queries, database, k, farthest=False, exclude=None):
    """Sorted true distances (float64) and the full distance matrix."""
    d = np.sqrt(((queries[:, None, :].astype(np.float64) - database[None].astype(np.float64)) ** 2).sum(-1))
    ranked = d.copy()
    if exclude is not None:
        rows = np.flatnonzero(exclude >= 0)
        ranked[rows, exclude[rows]] = -np.inf if farthest else np.inf
    order = np.argsort(-ranked if farthest else ranked, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, 1), order, d


def calls(monkeypatch, owner, name: str) -> list:
    """Record every call of ``owner.name`` (which still runs), so a test can check that
    the path its shrunken ``limits`` aim at was really taken."""
    calls = []
    original = getattr(owner, name)

    def spy(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return calls


def check(result, queries, database, k, farthest=False, exclude=None):
    """Assert ``result`` is the exact answer (distances, rows, order, exclusions) for tie-free data."""
    dist, idx = result
    assert dist.shape == idx.shape == (len(queries), k)
    assert dist.dtype == np.float32 and idx.dtype == np.int64
    ref_dist, ref_idx, full = reference(queries, database, k, farthest, exclude)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-5, atol=1e-5)
    # Each reported distance belongs to the reported row, whatever the tie order.
    np.testing.assert_allclose(dist, np.take_along_axis(full, idx, 1), rtol=1e-5, atol=1e-5)
    assert (np.diff(dist, axis=1) <= 0 if farthest else np.diff(dist, axis=1) >= 0).all()
    assert all(len(set(row)) == k for row in idx)
    if exclude is not None:
        assert not (idx == exclude[:, None]).any()
    # Random Gaussian data has no near-ties, so the rows themselves must match too.
    np.testing.assert_array_equal(idx, ref_idx)
