"""Where retrieval fails, as validation records it: every query's precision@k and
nearest training ids, and the class-confusion counts, checked against a
brute-force search on small synthetic embeddings; the sidecars' completeness
check; and the metrics staying what they were."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipeline import paths
from pipeline.embedding.embed import Embeddings
from pipeline.errors import ConfigError
from pipeline.evaluation.breakdown import QUERIES_SCHEMA, confusion_counts, query_table
from pipeline.evaluation.evaluate import evaluate, evaluate_epoch
from pipeline.evaluation.settings import ValidationSettings, metrics_are_current
from pipeline.paths import VALIDATION_SIDECARS, validation_files
from pipeline.storage import producer_of, write_epoch_tables

K = 5
SETTINGS = ValidationSettings(k=K, train_queries=10, figure_queries=2, figure_k=4, triplets=20, knn_backend="torch")
LONE = 7  # a validation class with no training image


def embeddings(seed: int = 0) -> tuple[Embeddings, Embeddings]:
    """4 training classes of 10 images, 3 of them with 3 validation images each, plus
    2 validation images of a class absent from training; classes overlap a little."""
    rng = np.random.default_rng(seed)
    train_labels = np.repeat(np.arange(4), 10)
    val_labels = np.concatenate([np.repeat([0, 1, 2], 3), [LONE, LONE]])
    centres = {c: rng.normal(0, 1.0, 6) for c in [0, 1, 2, 3, LONE]}

    def vectors(labels: np.ndarray) -> np.ndarray:
        return np.stack([centres[c] + rng.normal(0, 0.8, 6) for c in labels]).astype(np.float32)

    # Ids as a dataset assigns them: unique across splits, not row numbers.
    train = Embeddings(np.arange(100, 140, dtype=np.int64), train_labels, vectors(train_labels))
    val = Embeddings(np.arange(500, 511, dtype=np.int64), val_labels, vectors(val_labels))
    return train, val


def brute_order(train: Embeddings, val: Embeddings) -> np.ndarray:
    """Training rows of every validation query, nearest first, from all exact float64 distances."""
    d = ((val.vectors[:, None, :].astype(np.float64) - train.vectors[None].astype(np.float64)) ** 2).sum(-1)
    return np.argsort(d, axis=1, kind="stable")


@pytest.mark.parametrize("figure_k", [4, 40], ids=["figure_k<k", "figure_k=all training images"])
def test_query_records_match_brute_force(figure_k):
    train, val = embeddings()
    order = brute_order(train, val)
    result = evaluate_epoch(train, val, replace(SETTINGS, figure_k=figure_k))
    assert result.queries.schema == QUERIES_SCHEMA
    queries = result.queries.to_pandas()
    assert queries["image_id"].tolist() == val.image_ids.tolist()
    assert queries["label"].tolist() == val.labels.tolist()
    hits = (train.labels[order[:, :K]] == val.labels[:, None]).mean(axis=1)
    expected = np.where(val.labels == LONE, np.nan, hits)
    np.testing.assert_allclose(queries["precision"].to_numpy(), expected)
    assert np.isnan(queries["precision"].to_numpy()[-2:]).all()  # lone: nothing to find, not a failure
    assert [list(n) for n in queries["neighbors"]] == train.image_ids[order[:, :figure_k]].tolist()
    # The mean over measured queries is the reported precision@k, and the per-class table agrees.
    assert np.nanmean(queries["precision"]) == pytest.approx(result.metrics[f"precision_at_{K}_val"])
    by_class = queries.groupby("label")["precision"].mean()
    np.testing.assert_allclose(result.per_class[f"precision_at_{K}"], by_class.to_numpy())


def test_confusion_matches_brute_force():
    train, val = embeddings()
    order = brute_order(train, val)
    confusion = evaluate_epoch(train, val, SETTINGS).confusion
    assert list(confusion.columns) == ["query_label", "neighbor_label", "count"]
    assert all(confusion[c].dtype == np.int64 for c in confusion.columns)
    expected = Counter((int(q), int(n)) for q, row in zip(val.labels, train.labels[order[:, :K]]) for n in row)
    got = {(q, n): c for q, n, c in confusion.itertuples(index=False)}
    assert got == dict(expected)
    assert confusion[["query_label", "neighbor_label"]].apply(tuple, axis=1).is_monotonic_increasing
    # Each class's counts add up to k per query, lone queries included.
    assert confusion.groupby("query_label")["count"].sum().to_dict() == {0: 15, 1: 15, 2: 15, LONE: 10}
    # The diagonal is the per-class precision@k times k times the class's queries.
    diagonal = confusion[confusion.query_label == confusion.neighbor_label].set_index("query_label")["count"]
    per_class = evaluate_epoch(train, val, SETTINGS).per_class.set_index("label")
    for label in (0, 1, 2):
        assert diagonal.get(label, 0) == round(per_class.loc[label, f"precision_at_{K}"] * K * 3)


def test_metrics_do_not_depend_on_figure_k():
    # A figure_k above the search's own width widens the search; the metrics must not move.
    train, val = embeddings(seed=3)
    narrow = evaluate_epoch(train, val, SETTINGS)
    wide = evaluate_epoch(train, val, replace(SETTINGS, figure_k=40))
    assert narrow.metrics == wide.metrics
    pd.testing.assert_frame_equal(narrow.per_class, wide.per_class)
    pd.testing.assert_frame_equal(narrow.confusion, wide.confusion)
    metrics, per_class, neighbors = evaluate(train, val, SETTINGS)
    assert metrics == narrow.metrics
    pd.testing.assert_frame_equal(per_class, narrow.per_class)
    pd.testing.assert_frame_equal(neighbors, narrow.neighbors)


def test_query_table_and_confusion_reject_mismatched_shapes():
    with pytest.raises(ConfigError, match="query_table"):
        query_table(np.arange(3), np.zeros(3), np.zeros(3), np.zeros((2, 4)))
    with pytest.raises(ConfigError, match="at least k = 5"):
        confusion_counts(np.zeros((3, 4)), np.zeros(3), 5)
    table = query_table(np.arange(2), np.array([1, 2]), np.array([0.5, np.nan]), np.array([[7, 8], [9, 10]]))
    assert table.column("neighbors").to_pylist() == [[7, 8], [9, 10]]
    assert table.column("neighbors").type == pa.list_(pa.int64())


# ------------------------------------------------------------------ completeness of the files


def write_validation(metrics_file: Path, settings: dict) -> None:
    write_epoch_tables(metrics_file, {name: pd.DataFrame({"x": [1]}) for name in VALIDATION_SIDECARS}, 1)
    metrics_file.write_text(json.dumps({"epoch": 1, "settings": settings}))


@pytest.mark.parametrize("missing", VALIDATION_SIDECARS)
def test_metrics_are_not_current_without_every_sidecar(tmp_path, missing):
    metrics_file = tmp_path / "metrics" / "epoch-001.json"
    write_validation(metrics_file, {"k": 30})
    assert metrics_are_current(metrics_file, {"k": 30})
    assert not metrics_are_current(metrics_file, {"k": 10})
    paths.metrics_sidecar(metrics_file, missing).unlink()
    assert not metrics_are_current(metrics_file, {"k": 30})


def test_a_damaged_sidecar_names_every_file_of_the_epoch(tmp_path):
    metrics_file = tmp_path / "demo" / "metrics" / "epoch-004.json"
    names = [p.relative_to(metrics_file.parent).as_posix() for p in validation_files(metrics_file)]
    assert names == ["epoch-004.json", "per_class/epoch-004.parquet", "neighbors/epoch-004.parquet",
                     "queries/epoch-004.parquet", "confusion/epoch-004.parquet"]
    producer = producer_of(paths.metrics_sidecar(metrics_file, "queries"))
    assert producer.rerun == "ValidateEpoch --epoch 4 --experiment demo"
    assert producer.delete == validation_files(metrics_file)
