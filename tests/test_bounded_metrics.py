"""Retrieval metrics block by block over queries (pipeline.evaluation.bounded): the
same values, to the last digit, as the all-at-once search they replace, on data
with tied distances and blocks that split classes; the same as
pytorch-metric-learning; and never more than one block's neighbour lists."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from pipeline.embedding.embed import Embeddings
from pipeline.evaluation import bounded
from pipeline.evaluation.breakdown import confusion_counts, per_class_precision, query_precision, query_table
from pipeline.evaluation.evaluate import evaluate_epoch
from pipeline.evaluation.gallery import Gallery
from pipeline.evaluation.metrics import relevant_counts, required_neighbors, retrieval_metrics
from pipeline.evaluation.settings import ValidationSettings
from pipeline.knn import knn_search
from pipeline.seeds import evaluation_rng

KS = (1, 10, 30)
SIZES = [300, 70, 45, 12, 1]  # unequal classes: a block of small classes needs fewer columns than the widest
LONE = 9  # a query class absent from the database


def all_at_once(qv: np.ndarray, ql: np.ndarray, dv: np.ndarray, dl: np.ndarray, *, ks=KS, backend="torch",
                exclude: np.ndarray | None = None, min_neighbors: int = 0) -> tuple[dict[str, float], np.ndarray]:
    """The implementation before bounded memory (``retrieval_scores`` as it was), kept as the
    reference: one search of every query's R neighbours, then the means over the whole matrix."""
    self_excluded = exclude is not None
    need = required_neighbors(ql, dl, ks=ks, self_excluded=self_excluded)
    need = max(need, min(min_neighbors, len(dl) - int(self_excluded)))
    _, idx = knn_search(qv, dv, need, exclude=exclude, backend=backend)
    return retrieval_metrics(dl[idx], ql, dl, ks=ks, self_excluded=self_excluded), idx


def tied(rng: np.random.Generator, labels: np.ndarray, dim: int = 4) -> np.ndarray:
    """Class blobs rounded to a coarse grid: many duplicate vectors and equal distances."""
    centres = rng.normal(0, 1.0, (LONE + 1, dim))
    return np.round((centres[labels] + rng.normal(0, 0.9, (len(labels), dim))) * 2) / 2


def gallery(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffled database classes of :data:`SIZES` and queries of every class plus a lone one."""
    rng = np.random.default_rng(seed)
    dl = rng.permutation(np.repeat(np.arange(len(SIZES)), SIZES))
    ql = rng.permutation(np.concatenate([rng.integers(0, len(SIZES), 37), [LONE] * 3]))
    vectors = tied(rng, np.concatenate([dl, ql])).astype(np.float32)
    return vectors[len(dl):], ql, vectors[: len(dl)], dl


def same(ours: dict[str, float], reference: dict[str, float]) -> bool:
    """Equal to the last digit (NaN equal to NaN)."""
    return ours.keys() == reference.keys() and all(
        a == b or (math.isnan(a) and math.isnan(b)) for a, b in ((ours[n], reference[n]) for n in ours))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_data_has_ties_at_the_r_cut_and_blocks_split_classes(seed):
    qv, ql, dv, dl = gallery(seed)
    squared = np.sort(((qv[:, None].astype(np.float64) - dv[None]) ** 2).sum(-1), axis=1)
    r = relevant_counts(ql, dl)
    measured = np.flatnonzero(r > 0)
    # Where the R-th and (R+1)-th distances tie, only the canonical tie-break decides R-precision.
    assert (squared[measured, r[measured] - 1] == squared[measured, r[measured]]).sum() > 10
    assert len(np.unique(ql[:3])) > 1 and len(np.unique(ql[3:6])) > 1  # a 3-row block mixes classes


@pytest.mark.parametrize("rows", [1, 3, 7, 1000])
@pytest.mark.parametrize("seed", [0, 1])
def test_same_values_as_all_at_once(seed, rows):
    qv, ql, dv, dl = gallery(seed)
    reference, idx = all_at_once(qv, ql, dv, dl, min_neighbors=80)
    result = bounded.bounded_retrieval(qv, ql, dv, dl, ks=KS, backend="torch", min_neighbors=80, columns=40,
                                       rows=rows)
    assert same(result.metrics, reference), (result.metrics, reference)
    np.testing.assert_array_equal(result.nearest, idx[:, :40])


def test_keeping_more_columns_than_the_metrics_need_moves_no_digit():
    # Wider than every class: all-at-once scored the widened matrix, whose MAP@R row sums round
    # differently; the bounded path scores the metrics' own width, whatever the caller keeps.
    qv, ql, dv, dl = gallery(3)
    reference, _ = all_at_once(qv, ql, dv, dl)
    _, wide_idx = all_at_once(qv, ql, dv, dl, min_neighbors=len(dl))
    result = bounded.bounded_retrieval(qv, ql, dv, dl, ks=KS, backend="torch", min_neighbors=len(dl),
                                       columns=len(dl), rows=4)
    assert same(result.metrics, reference), (result.metrics, reference)
    np.testing.assert_array_equal(result.nearest, wide_idx)


@pytest.mark.parametrize("rows", [2, 5])
def test_same_values_as_all_at_once_with_the_queries_excluded_from_their_own_search(rows):
    _, _, dv, dl = gallery(2)
    members = np.sort(np.random.default_rng(2).choice(len(dl), 50, replace=False))
    members = np.union1d(members, np.flatnonzero(dl == len(SIZES) - 1))  # the single-image class: lone
    reference, idx = all_at_once(dv[members], dl[members], dv, dl, exclude=members)
    result = bounded.bounded_retrieval(dv[members], dl[members], dv, dl, ks=KS, backend="faiss",
                                       exclude=members, columns=30, rows=rows)
    assert same(result.metrics, reference), (result.metrics, reference)
    np.testing.assert_array_equal(result.nearest, idx[:, :30])


def test_each_block_searches_the_widest_class_and_no_more_rows(monkeypatch):
    qv, ql, dv, dl = gallery(0)
    calls = []

    def spy(queries, database, k, **kwargs):
        calls.append((len(queries), k))
        return knn_search(queries, database, k, **kwargs)

    monkeypatch.setattr(bounded, "knn_search", spy)
    bounded.bounded_retrieval(qv, ql, dv, dl, ks=KS, backend="torch", rows=6)
    # Every block gets the global width (MAP@R's row sums depend on it), 6 queries at most.
    assert calls == [(6, max(SIZES))] * 6 + [(len(ql) - 36, max(SIZES))]


def test_block_rows_fit_the_budget():
    for width in (1, 30, 6_000, 100_000):
        rows = bounded.block_rows(width)
        assert rows >= 1 and rows * width * bounded.PAIR_BYTES <= bounded.BLOCK_BYTES
        assert (rows + 1) * width * bounded.PAIR_BYTES > bounded.BLOCK_BYTES  # as many as fit
    assert bounded.block_rows(10**12) == 1  # a class larger than the budget: one query at a time
    # A gallery's own budget (the raw-pixel baseline's quarter of it) takes its place.
    assert bounded.block_rows(6_000, bounded.BLOCK_BYTES // 4) == bounded.block_rows(6_000) // 4


def test_a_gallery_with_a_smaller_block_budget_searches_smaller_blocks_to_the_same_values(monkeypatch):
    qv, ql, dv, dl = gallery(4)
    budget = 3 * max(SIZES) * bounded.PAIR_BYTES
    widths = []
    search = bounded.search_gallery
    monkeypatch.setattr(bounded, "search_gallery",
                        lambda g, q, k, **kw: widths.append(len(q)) or search(g, q, k, **kw))
    small = bounded.gallery_retrieval(qv, ql, Gallery(dv, dl, "torch", block_bytes=budget)).metrics
    assert max(widths) == 3
    assert small == bounded.gallery_retrieval(qv, ql, Gallery(dv, dl, "torch")).metrics


def test_no_queries_give_nan_means():
    _, _, dv, dl = gallery(0)
    result = bounded.bounded_retrieval(np.zeros((0, dv.shape[1]), np.float32), np.zeros(0, np.int64), dv, dl)
    assert list(result.metrics) == ["precision_at_1", "precision_at_10", "precision_at_30", "r_precision",
                                    "map_at_r"]
    assert all(math.isnan(v) for v in result.metrics.values()) and result.nearest.shape == (0, 0)


PML_KEYS = {"precision_at_1": "precision_at_1", "r_precision": "r_precision",
            "mean_average_precision_at_r": "map_at_r"}


@pytest.mark.parametrize("self_reference", [True, False], ids=["queries=reference", "separate"])
def test_matches_pytorch_metric_learning(self_reference):
    pml = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    torch = pytest.importorskip("torch")
    calculator = pml.AccuracyCalculator(include=tuple(PML_KEYS), k="max_bin_count", device=torch.device("cpu"))
    rng = np.random.default_rng(5)
    labels = rng.permutation(np.repeat(np.arange(5), [40, 25, 60, 7, 1]))
    emb = (rng.standard_normal((5, 8))[labels] + 1.2 * rng.standard_normal((len(labels), 8))).astype(np.float32)
    if self_reference:
        theirs = calculator.get_accuracy(emb, labels)
        ours = bounded.bounded_retrieval(emb, labels, emb, labels, exclude=np.arange(len(emb)), rows=4).metrics
    else:
        is_query = rng.random(len(labels)) < 0.3
        q, r = (emb[is_query], labels[is_query]), (emb[~is_query], labels[~is_query])
        theirs = calculator.get_accuracy(*q, *r)
        ours = bounded.bounded_retrieval(*q, *r, rows=4).metrics
    for pml_key, our_key in PML_KEYS.items():
        assert ours[our_key] == pytest.approx(theirs[pml_key], abs=1e-9), pml_key


def test_evaluate_epoch_in_small_blocks_matches_the_all_at_once_tables(monkeypatch):
    qv, ql, dv, dl = gallery(3)
    train = Embeddings(np.arange(1000, 1000 + len(dl)), dl, dv)
    val = Embeddings(np.arange(5000, 5000 + len(ql)), ql, qv)
    settings = ValidationSettings(k=10, train_queries=60, figure_queries=3, figure_k=12, triplets=30,
                                  knn_backend="torch")
    # 4 queries a block at this width (the largest class): validation and training queries span many blocks.
    assert relevant_counts(ql, dl).max() == max(SIZES)
    monkeypatch.setattr(bounded, "BLOCK_BYTES", 4 * max(SIZES) * bounded.PAIR_BYTES)
    result = evaluate_epoch(train, val, settings)

    val_ref, idx = all_at_once(qv, ql, dv, dl, ks=(1, 10), min_neighbors=settings.figure_k)
    rows = np.sort(evaluation_rng(settings.seed, "train_queries").choice(len(dl), 60, replace=False))
    train_ref, _ = all_at_once(dv[rows], dl[rows], dv, dl, ks=(1, 10), exclude=rows)
    for split, reference in (("val", val_ref), ("train", train_ref)):
        assert same({n: result.metrics[f"{n}_{split}"] for n in reference}, reference), split
    labels = dl[idx]
    per_class = per_class_precision(labels, ql, 10, database_labels=dl).rename(
        columns={"precision_at_k": "precision_at_10"})
    pd.testing.assert_frame_equal(result.per_class, per_class)
    queries = query_table(val.image_ids, ql, query_precision(labels, ql, 10, database_labels=dl),
                          train.image_ids[idx[:, : settings.figure_k]])
    assert result.queries.schema == queries.schema
    for column in ("image_id", "label", "neighbors"):
        assert result.queries.column(column).to_pylist() == queries.column(column).to_pylist(), column
    np.testing.assert_array_equal(result.queries.column("precision").to_numpy(),  # NaN-aware, exact
                                  queries.column("precision").to_numpy())
    pd.testing.assert_frame_equal(result.confusion, confusion_counts(labels, ql, 10))
    # Widening the figures' columns moves nothing the metrics report.
    wide = evaluate_epoch(train, val, replace(settings, figure_k=len(dl)))
    assert same(wide.metrics, result.metrics)


def test_the_pixel_baseline_takes_a_quarter_budget_only_for_large_vectors():
    from pipeline.evaluation import baseline

    assert baseline.block_budget(51 * 2**20) == 0  # Fashion-MNIST at 14x14: validation's budget
    assert baseline.block_budget(1300 * 2**20) == baseline.BLOCK_BYTES == bounded.BLOCK_BYTES // 4


def test_the_pixel_baseline_reads_its_queries_lazily_with_the_same_metrics(tmp_path):
    """The validation split's pixels are computed block by block (``PixelRows``), not held
    beside the gallery; every metric equals validation over the whole arrays."""
    import json

    from pipeline import paths
    from pipeline.data.pixel_store import create_store, open_store
    from pipeline.evaluation import baseline
    from pipeline.evaluation.settings import BaselineSettings

    rng = np.random.default_rng(3)
    labels = np.arange(260) % 5
    store = create_store(tmp_path / paths.PIXEL_STORE_FILE, len(labels), 12, 3)
    store[:] = rng.integers(0, 256, (5, 12, 12, 3))[labels] // 2 + rng.integers(0, 128, (len(labels), 12, 12, 3))
    store.flush()
    del store
    index = pd.DataFrame({"image_id": np.arange(len(labels)), "split": ["train"] * 200 + ["val"] * 60,
                          "label": labels})
    index.to_parquet(tmp_path / paths.DATASET_INDEX_FILE)
    settings = ValidationSettings(k=10, train_queries=50, triplets=40)

    lazy = baseline.pixel_baseline(tmp_path, tmp_path / "baseline.json", BaselineSettings(max_size=8), settings)

    store = open_store(tmp_path)
    rows = baseline.pixel_embeddings(store, index, "val", 8, lazy=True).vectors
    whole = baseline.pixel_vectors(store, np.arange(200, 260), 8)
    assert isinstance(rows, baseline.PixelRows) and rows.shape == whole.shape and rows.nbytes == whole.nbytes
    np.testing.assert_array_equal(rows[5:17], whole[5:17])
    np.testing.assert_array_equal(rows[np.array([40, 3, 3])], whole[[40, 3, 3]])
    np.testing.assert_array_equal(np.asarray(rows), whole)
    expected = evaluate_epoch(baseline.pixel_embeddings(store, index, "train", 8),
                              baseline.pixel_embeddings(store, index, "val", 8), settings, figures=False).metrics
    written = json.loads((tmp_path / "baseline.json").read_text())
    assert {k: v for k, v in lazy.items() if k not in ("seconds", "max_size")} == expected
    assert written == lazy
