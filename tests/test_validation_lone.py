"""Validation when some queries' classes have no training image ("lone" queries):
they stay out of the means (as in pytorch-metric-learning), and the counts,
per-class table and log say so."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from pipeline.embedding.embed import Embeddings
from pipeline.evaluation.evaluate import evaluate
from pipeline.evaluation.settings import ValidationSettings

RETRIEVAL_KEYS = ("precision_at_1", "precision_at_10", "precision_at_30", "r_precision", "map_at_r")


def _embeddings(labels: list[int], centres: np.ndarray, rng: np.random.Generator, first_id: int) -> Embeddings:
    """One noisy vector per label around its class centre."""
    labels_arr = np.asarray(labels, dtype=np.int64)
    vectors = (centres[labels_arr] + 0.8 * rng.standard_normal((len(labels_arr), centres.shape[1])))
    ids = np.arange(first_id, first_id + len(labels_arr), dtype=np.int64)
    return Embeddings(ids, labels_arr, vectors.astype(np.float32))


def _data(val_labels: list[int]) -> tuple[Embeddings, Embeddings]:
    """Training classes 0, 1, 2 (35 images each) and 4 (a single image); class 3 is never trained on."""
    rng = np.random.default_rng(0)
    centres = 3.0 * rng.standard_normal((5, 8))
    train = _embeddings([0] * 35 + [1] * 35 + [2] * 35 + [4], centres, rng, 0)
    return train, _embeddings(val_labels, centres, rng, 1000)


# Class 3: no training image (lone validation queries); class 4: one training image
# (measurable for validation, but lone as a training query, with itself excluded).
VAL_LABELS = [0] * 5 + [1] * 5 + [2] * 5 + [3] * 4 + [4] * 2
SETTINGS = ValidationSettings(train_queries=1000, figure_queries=3, figure_k=3, triplets=50, knn_backend="torch")


def test_lone_validation_queries_are_counted_and_left_out(caplog):
    train, val = _data(VAL_LABELS)
    with caplog.at_level(logging.WARNING, logger="pipeline.evaluation.evaluate"):
        metrics, per_class, _ = evaluate(train, val, SETTINGS)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    # The means cover 17 of the 21 validation queries; class 3's four are excluded.
    assert metrics["queries_val"] == 17
    assert metrics["queries_val_excluded"] == 4
    # All 106 training images are queries (train_queries > size); class 4's one has nothing else to find.
    assert metrics["queries_train"] == 105
    assert metrics["queries_train_excluded"] == 1

    # Left out, not scored as misses: the means equal those of a run without class 3.
    keep = np.asarray(VAL_LABELS) != 3
    without = Embeddings(val.image_ids[keep], val.labels[keep], val.vectors[keep])
    reference, _, _ = evaluate(train, without, SETTINGS)
    assert reference["queries_val"] == 17 and reference["queries_val_excluded"] == 0
    for key in RETRIEVAL_KEYS:
        assert metrics[f"{key}_val"] == pytest.approx(reference[f"{key}_val"]), key
        assert metrics[f"{key}_train"] == pytest.approx(reference[f"{key}_train"]), key

    # Class 3 keeps its row and query count, with no precision; class 4 is measured.
    assert per_class["label"].tolist() == [0, 1, 2, 3, 4]
    assert per_class["n_queries"].tolist() == [5, 5, 5, 4, 2]
    assert per_class["precision_at_30"].isna().tolist() == [False, False, False, True, False]

    val_warning = [m for m in warnings if " val queries" in m]
    train_warning = [m for m in warnings if " train queries" in m]
    assert len(val_warning) == 1 and "4 of 21 val queries" in val_warning[0] and "labels 3" in val_warning[0]
    assert len(train_warning) == 1 and "1 of 106 train queries" in train_warning[0] and "labels 4" in train_warning[0]


def test_no_warning_when_every_class_has_training_images(caplog):
    train, val = _data([0] * 5 + [1] * 5 + [2] * 5)
    settings = ValidationSettings(train_queries=20, figure_queries=3, figure_k=3, triplets=50, knn_backend="torch")
    with caplog.at_level(logging.WARNING, logger="pipeline.evaluation.evaluate"):
        metrics, per_class, _ = evaluate(train, val, settings)
    assert metrics["queries_val"] == 15 and metrics["queries_val_excluded"] == 0
    # 20 seeded training queries, split between measured and excluded (class 4's single image).
    assert metrics["queries_train"] + metrics["queries_train_excluded"] == 20
    assert not per_class["precision_at_30"].isna().any()
    assert not [r for r in caplog.records if " val queries" in r.getMessage()]
