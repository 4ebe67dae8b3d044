"""Retrieval metrics on hand-made cases and against pytorch-metric-learning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import ConfigError
from pipeline.evaluation.breakdown import per_class_precision
from pipeline.evaluation import metrics
from pipeline.evaluation.metrics import (
    indexed_triplet_precision,
    lone_queries,
    map_at_r,
    precision_at_k,
    r_precision,
    relevant_counts,
    required_neighbors,
    retrieval_metrics,
    triplet_precision,
)
from pipeline.knn import knn_search

# Query 0 (class 1, R=3): hits at ranks 1 and 3 of the first 3; query 1 (class 2, R=2): hit at rank 2 only.
NEIGHBORS = np.array([[1, 0, 1, 1], [0, 2, 0, 2]])
QUERIES = np.array([1, 2])
R = np.array([3, 2])


def test_precision_at_k_by_hand():
    np.testing.assert_allclose(precision_at_k(NEIGHBORS, QUERIES, 1), [1.0, 0.0])
    np.testing.assert_allclose(precision_at_k(NEIGHBORS, QUERIES, 4), [0.75, 0.5])


def test_r_precision_by_hand():
    np.testing.assert_allclose(r_precision(NEIGHBORS, QUERIES, R), [2 / 3, 1 / 2])


def test_map_at_r_divides_by_r_not_by_hits():
    # Query 0: (1/1 + 2/3) / 3; query 1: (1/2) / 2. Hits beyond rank R do not count.
    np.testing.assert_allclose(map_at_r(NEIGHBORS, QUERIES, R), [(1 + 2 / 3) / 3, 0.25])
    np.testing.assert_allclose(map_at_r([[5, 5, 5]], [5], np.array([3])), [1.0])
    np.testing.assert_allclose(map_at_r([[0, 5, 5]], [5], np.array([2])), [0.25])


def test_r_zero_gives_nan():
    assert np.isnan(r_precision(NEIGHBORS, QUERIES, np.array([0, 2]))[0])
    assert np.isnan(map_at_r(NEIGHBORS, QUERIES, np.array([0, 2]))[0])


def test_string_labels_work():
    labels = np.array([["n01", "n02"], ["n02", "n02"]])
    np.testing.assert_allclose(precision_at_k(labels, np.array(["n01", "n02"]), 2), [0.5, 1.0])


def test_relevant_counts_and_required_neighbors():
    database = np.array([1, 1, 1, 2, 2, 3])
    np.testing.assert_array_equal(relevant_counts(np.array([1, 2, 4]), database), [3, 2, 0])
    np.testing.assert_array_equal(relevant_counts(database, database, self_excluded=True), [2, 2, 2, 1, 1, 0])
    assert required_neighbors(np.array([1]), database, ks=(1, 2)) == 3
    assert required_neighbors(np.array([1]), database, ks=(1, 10)) == 6  # capped at the database size
    assert required_neighbors(database, database, ks=(1,), self_excluded=True) == 2
    with pytest.raises(ConfigError, match="self_excluded"):
        relevant_counts(np.array([4]), database, self_excluded=True)


def test_retrieval_metrics_skips_lone_queries():
    database = np.array([1, 1, 1, 2, 2, 7])
    neighbors = np.array([[1, 2, 1, 1], [2, 1, 1, 2], [1, 1, 2, 2]])
    queries = np.array([1, 2, 9])  # class 9 is not in the database: a lone query
    got = retrieval_metrics(neighbors, queries, database, ks=(1, 2))
    assert list(got) == ["precision_at_1", "precision_at_2", "r_precision", "map_at_r"]
    assert got["precision_at_1"] == pytest.approx(1.0)
    assert got["precision_at_2"] == pytest.approx(0.5)
    assert got["r_precision"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert got["map_at_r"] == pytest.approx(((1 + 2 / 3) / 3 + 1 / 2) / 2)


def test_lone_queries_marks_what_the_means_leave_out():
    database = np.array([1, 1, 1, 2, 2, 7])
    np.testing.assert_array_equal(lone_queries(np.array([1, 2, 9, 7]), database), [False, False, True, False])
    # Self-excluded, class 7's only member has nothing else to find.
    np.testing.assert_array_equal(lone_queries(database, database, self_excluded=True), [0, 0, 0, 0, 0, 1])
    # Dropping the marked queries by hand gives the same means.
    neighbors = np.array([[1, 2, 1, 1], [2, 1, 1, 2], [1, 1, 2, 2]])
    queries = np.array([1, 2, 9])
    keep = ~lone_queries(queries, database)
    assert retrieval_metrics(neighbors, queries, database, ks=(1, 2)) == \
        retrieval_metrics(neighbors[keep], queries[keep], database, ks=(1, 2))


def test_retrieval_metrics_self_excluded_lowers_r():
    database = np.array([1, 1, 1, 2, 2])
    neighbors = np.array([[1, 1, 2], [1, 1, 2], [2, 1, 1], [2, 1, 1], [1, 2, 1]])
    got = retrieval_metrics(neighbors, database, database, ks=(1,), self_excluded=True)
    # R = 2 for class 1 and 1 for class 2.
    assert got["r_precision"] == pytest.approx((1 + 1 + 0.5 + 1 + 0) / 5)


def test_retrieval_metrics_all_lone_is_nan():
    got = retrieval_metrics(np.array([[1, 1]]), np.array([3]), np.array([1, 1]), ks=(1,))
    assert all(np.isnan(v) for v in got.values())


def test_retrieval_metrics_needs_enough_columns():
    database = np.repeat(np.arange(3), 5)
    with pytest.raises(ConfigError, match="needs 5"):
        retrieval_metrics(np.zeros((2, 4), dtype=int), np.array([0, 1]), database, ks=(1, 2))
    with pytest.raises(ConfigError, match="needs 10"):
        retrieval_metrics(np.zeros((2, 6), dtype=int), np.array([0, 1]), database, ks=(1, 10))


def test_per_class_precision():
    neighbors = np.array([[1, 1], [1, 0], [0, 0], [1, 1]])
    frame = per_class_precision(neighbors, np.array([1, 1, 0, 2]), k=2)
    expected = pd.DataFrame({"label": [0, 1, 2], "n_queries": [1, 2, 1], "precision_at_k": [1.0, 0.75, 0.0]})
    pd.testing.assert_frame_equal(frame, expected, check_dtype=False)


def test_per_class_precision_gives_classes_without_database_items_nan():
    neighbors = np.array([[1, 1], [1, 0], [0, 0], [1, 1]])
    queries = np.array([1, 1, 0, 2])
    frame = per_class_precision(neighbors, queries, k=2, database_labels=np.array([0, 1, 1]))
    # Class 2 has no database item: its row stays, with its query count, but no number.
    expected = pd.DataFrame({"label": [0, 1, 2], "n_queries": [1, 2, 1], "precision_at_k": [1.0, 0.75, np.nan]})
    pd.testing.assert_frame_equal(frame, expected, check_dtype=False)
    # The unweighted mean over classes skips it, as retrieval_metrics' means do.
    assert frame["precision_at_k"].mean() == pytest.approx((1.0 + 0.75) / 2)


def test_triplet_precision():
    q = np.zeros((4, 2))
    p = np.array([[1, 0], [0, 3], [1, 1], [2, 0]])
    n = np.array([[2, 0], [0, 1], [1, 1], [0, 3]])
    # Correct, wrong, a tie (counts as wrong), correct.
    assert triplet_precision(q, p, n) == 0.5
    with pytest.raises(ConfigError):
        triplet_precision(q, p, n[:3])
    with pytest.raises(ConfigError):
        triplet_precision(q[:0], p[:0], n[:0])


def test_indexed_triplet_precision_gathers_in_steps(monkeypatch):
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(50, 6))
    rows = [rng.integers(0, 50, 37) for _ in range(3)]
    whole = triplet_precision(*(vectors[r] for r in rows))
    monkeypatch.setattr(metrics, "_TRIPLET_VALUES", 12)  # two rows a step
    assert indexed_triplet_precision(vectors, *rows) == whole
    with pytest.raises(ConfigError, match="one length"):
        indexed_triplet_precision(vectors, rows[0], rows[1], rows[2][:3])


def test_invalid_inputs():
    with pytest.raises(ConfigError, match="at least 5"):
        precision_at_k(NEIGHBORS, QUERIES, 5)
    with pytest.raises(ConfigError, match="one row per query"):
        precision_at_k(NEIGHBORS, QUERIES[:1], 1)
    with pytest.raises(ConfigError, match="at least 6"):
        map_at_r(NEIGHBORS, QUERIES, np.array([6, 1]))


def _clustered(rng, sizes, dim=8, spread=1.2):
    """Gaussian blobs, one per class, overlapping enough that the metrics are far from 0 and 1."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    centres = rng.standard_normal((len(sizes), dim))
    return (centres[labels] + spread * rng.standard_normal((len(labels), dim))).astype(np.float32), labels


PML_KEYS = {"precision_at_1": "precision_at_1", "r_precision": "r_precision",
            "mean_average_precision_at_r": "map_at_r"}


def _pml_calculator():
    pml = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    torch = pytest.importorskip("torch")
    return pml.AccuracyCalculator(include=tuple(PML_KEYS), k="max_bin_count", device=torch.device("cpu"))


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_pml_when_queries_are_the_reference(seed):
    calculator = _pml_calculator()
    rng = np.random.default_rng(seed)
    emb, labels = _clustered(rng, [40, 25, 60, 7, 1, 33])  # class 4 has one member: a lone query
    theirs = calculator.get_accuracy(emb, labels)
    k = required_neighbors(labels, labels, self_excluded=True)
    _, idx = knn_search(emb, emb, k, exclude=np.arange(len(emb)))
    ours = retrieval_metrics(labels[idx], labels, labels, self_excluded=True)
    for pml_key, our_key in PML_KEYS.items():
        assert ours[our_key] == pytest.approx(theirs[pml_key], abs=1e-9), pml_key


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_pml_with_separate_query_and_reference(seed):
    calculator = _pml_calculator()
    rng = np.random.default_rng(seed)
    emb, labels = _clustered(rng, [45, 30, 70, 12, 50])
    is_query = rng.random(len(labels)) < 0.3
    is_query[labels == 3] = True  # class 3 only among queries: lone, left out of every mean
    query, query_labels = emb[is_query], labels[is_query]
    reference, reference_labels = emb[~is_query], labels[~is_query]
    theirs = calculator.get_accuracy(query, query_labels, reference, reference_labels)
    k = required_neighbors(query_labels, reference_labels)
    _, idx = knn_search(query, reference, k)
    ours = retrieval_metrics(reference_labels[idx], query_labels, reference_labels)
    for pml_key, our_key in PML_KEYS.items():
        assert ours[our_key] == pytest.approx(theirs[pml_key], abs=1e-9), pml_key
