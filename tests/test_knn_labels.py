"""``knn_search(..., labels=...)``: the neighbours' labels, place by place, are those of
the canonical answer, and so are the first ``exact_columns`` rows, while exact distances
are computed only where a near tie joins two labels (what retrieval metrics read)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.knn import canonical, knn_search
from tests.knn_reference import BACKENDS


def _crowded(seed: int, n: int = 1500, dim: int = 16, classes: int = 3):
    """Rows far from the origin and close together: the float32 expansion's error is larger
    than most gaps between distances, so its order is mostly wrong without exact distances;
    some rows repeat, so there are exact ties too."""
    rng = np.random.default_rng(seed)
    rows = 100.0 + 0.05 * rng.standard_normal((n, dim))
    rows[rng.integers(0, n, n // 10)] = rows[rng.integers(0, n, n // 10)]
    database = rows.astype(np.float32)
    labels = rng.integers(0, classes, n)
    queries = (database[rng.integers(0, n, 40)] + 0.01 * rng.standard_normal((40, dim))).astype(np.float32)
    return queries, database, labels


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("farthest", [False, True])
@pytest.mark.parametrize("with_exclude", [False, True])
def test_labels_match_the_canonical_answer_place_by_place(backend, farthest, with_exclude):
    queries, database, labels = _crowded(seed=3)
    exclude = np.arange(len(queries)) * 7 if with_exclude else None
    k = 600
    _, canonical_rows = knn_search(queries, database, k, farthest=farthest, exclude=exclude, backend=backend)
    for columns, block_size in ((0, 4096), (5, 7), (40, 4096)):
        _, rows = knn_search(queries, database, k, farthest=farthest, exclude=exclude, backend=backend,
                             labels=labels, exact_columns=columns, block_size=block_size)
        np.testing.assert_array_equal(labels[rows], labels[canonical_rows])
        np.testing.assert_array_equal(rows[:, :columns], canonical_rows[:, :columns])


@pytest.mark.parametrize("backend", BACKENDS)
def test_string_labels_and_one_label_per_row(backend):
    queries, database, labels = _crowded(seed=4, classes=4)
    names = np.array(["coat", "shirt", "dress", "bag"], dtype=object)[labels]
    _, canonical_rows = knn_search(queries, database, 300, backend=backend)
    _, rows = knn_search(queries, database, 300, backend=backend, labels=names)
    np.testing.assert_array_equal(names[rows], names[canonical_rows])


def test_exact_distances_only_where_a_near_tie_joins_two_labels(monkeypatch):
    """The saving itself: with the same candidates, far fewer pairs are recomputed exactly."""
    queries, database, labels = _crowded(seed=5, classes=2)
    # Each label a crowd of its own: near ties join rows of one label, almost never two.
    database[:, 0] += 20 * labels
    counted = []
    real = canonical.exact_pairs
    monkeypatch.setattr(canonical, "exact_pairs", lambda q, d, r, c: counted.append(len(r)) or real(q, d, r, c))
    knn_search(queries, database, 500, backend="torch")
    everything = sum(counted)
    counted.clear()
    knn_search(queries, database, 500, backend="torch", labels=labels)
    assert sum(counted) < everything / 3


@pytest.mark.parametrize("kwargs, message", [
    ({"exact_columns": 3}, "exact_columns=3 has no effect without labels"),
    ({"labels": np.zeros(5)}, "one label per database row"),
    ({"labels": np.zeros(50), "exact_columns": -1}, "exact_columns must be a non-negative integer"),
])
def test_bad_label_arguments_say_what_to_change(kwargs, message):
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match=message):
        knn_search(rng.standard_normal((3, 4)), rng.standard_normal((50, 4)), 5, **kwargs)


def test_float64_keys_leave_only_true_ties_to_recompute(monkeypatch):
    """Where the float32 expansion cannot order most of a crowd, float64 keys can: the same
    canonical answer, with exact distances for the repeated rows' ties alone."""
    queries, database, labels = _crowded(seed=6)
    counted = {}
    real = canonical.exact_pairs
    answers = {}
    for backend in ("torch", "float64"):
        counted[backend] = []
        monkeypatch.setattr(canonical, "exact_pairs",
                            lambda q, d, r, c, seen=counted[backend]: seen.append(len(r)) or real(q, d, r, c))
        answers[backend] = knn_search(queries, database, 500, backend=backend, labels=labels, exact_columns=30)
    np.testing.assert_array_equal(answers["float64"][1][:, :30], answers["torch"][1][:, :30])
    np.testing.assert_array_equal(labels[answers["float64"][1]], labels[answers["torch"][1]])
    assert 0 < sum(counted["float64"]) < sum(counted["torch"]) / 20
