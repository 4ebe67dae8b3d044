"""``[ValidateEpoch] index = ivf``: an approximate faiss IVF index for large galleries.

Exact ``flat`` search stays the default and records nothing new; ``ivf`` records its
recall@k against exact search, equals exact search when it probes every list,
answers each query the same way whatever block it is searched in, and refuses bad
settings naming them. Changing the index revalidates the epoch.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tasks
from pipeline.embedding.embed import Embeddings
from pipeline.errors import ConfigError
from pipeline.evaluation.bounded import search_gallery
from pipeline.evaluation.evaluate import evaluate_epoch
from pipeline.evaluation.gallery import build_gallery
from pipeline.evaluation.settings import ValidationSettings
from pipeline.knn import knn_search
from pipeline.seeds import evaluation_rng
from tests.support import assert_succeeded, build, fast_config

SETTINGS = ValidationSettings(k=10, train_queries=100, figure_queries=3, figure_k=5, triplets=100, seed=2)
IVF = replace(SETTINGS, index="ivf", nlist=16, nprobe=1, recall_queries=50)


def clustered(n: int, seed: int, classes: int = 8, dim: int = 12) -> Embeddings:
    """Class-clustered vectors with overlapping classes, so an approximate search can miss."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(size=(classes, dim)) * 1.5
    labels = rng.integers(0, classes, n)
    vectors = (centers[labels] + rng.normal(size=(n, dim))).astype(np.float32)
    return Embeddings(np.arange(n), labels.astype(np.int64), vectors)


TRAIN, VAL = clustered(600, 0), clustered(150, 1)


def test_flat_is_the_default_and_records_nothing_new() -> None:
    assert ValidationSettings().index == "flat"
    # The recorded settings are those recorded before the index was a setting: old metrics stay current.
    assert set(SETTINGS.recorded()) == {"k", "train_queries", "figure_queries", "figure_k", "triplets"}
    assert set(IVF.recorded()) == set(SETTINGS.recorded()) | {"index", "nlist", "nprobe", "recall_queries"}
    assert not [key for key in evaluate_epoch(TRAIN, VAL, SETTINGS).metrics if key.startswith("ivf")]


def test_ivf_records_its_recall_against_exact_search() -> None:
    flat = evaluate_epoch(TRAIN, VAL, SETTINGS)
    one_list = evaluate_epoch(TRAIN, VAL, IVF).metrics
    assert one_list["ivf_recall_queries"] == 50
    assert 0.3 < one_list["ivf_recall_at_10_val"] < 1  # one list of 16 misses some true neighbours
    # By hand: the share of the sampled queries' exact 10 nearest found by the approximate search.
    gallery = build_gallery(TRAIN.vectors, TRAIN.labels, index="ivf", nlist=16, nprobe=1, seed=2)
    _, approx = search_gallery(gallery, VAL.vectors, 10)
    _, exact = knn_search(VAL.vectors, TRAIN.vectors, 10)
    per_query = np.array([np.intersect1d(a, e).size / 10 for a, e in zip(approx, exact)])
    sampled = np.sort(evaluation_rng(2, "ivf_recall").choice(150, size=50, replace=False))
    assert one_list["ivf_recall_at_10_val"] == pytest.approx(per_query[sampled].mean(), abs=1e-12)

    # Probing every list is an exhaustive search: exact recall, and the exact metrics and tables.
    every = evaluate_epoch(TRAIN, VAL, replace(IVF, nprobe=16))
    assert every.metrics.pop("ivf_recall_at_10_val") == 1.0 and every.metrics.pop("ivf_recall_queries") == 50
    assert every.metrics == flat.metrics
    pd.testing.assert_frame_equal(every.per_class, flat.per_class)
    assert every.queries.equals(flat.queries)


def test_ivf_answers_depend_on_the_query_alone_and_are_complete() -> None:
    gallery = build_gallery(TRAIN.vectors, TRAIN.labels, index="ivf", nlist=16, nprobe=1, seed=2)
    # 200 neighbours: more than one list holds (about 38 rows each), so queries probe more lists.
    dist, rows = search_gallery(gallery, VAL.vectors, 200)
    assert (rows >= 0).all() and all(len(set(r)) == 200 for r in rows)
    assert (np.diff(dist, axis=1) >= 0).all()
    for lo, hi in ((0, 1), (1, 40), (40, 150)):  # other groupings of the queries: the same answers
        d, r = search_gallery(gallery, VAL.vectors[lo:hi], 200)
        np.testing.assert_array_equal(r, rows[lo:hi])
        np.testing.assert_array_equal(d, dist[lo:hi])
    # Database members as queries, each leaving itself out.
    members = np.arange(0, 600, 7)
    _, rows = search_gallery(gallery, TRAIN.vectors[members], 20, exclude=members)
    assert not (rows == members[:, None]).any()


def test_the_ivf_index_is_seeded() -> None:
    def build_bytes(seed: int) -> bytes:
        return build_gallery(TRAIN.vectors, TRAIN.labels, index="ivf", nlist=16, nprobe=1, seed=seed).ivf.data.tobytes()

    assert build_bytes(2) == build_bytes(2)
    assert build_bytes(2) != build_bytes(3)


@pytest.mark.parametrize("settings, message", [
    (replace(IVF, nlist=601), r"\[ValidateEpoch\] nlist = 601, but the database .* has 600 rows"),
    (replace(IVF, nprobe=17), r"\[ValidateEpoch\] nprobe = 17 with nlist = 16"),
    (replace(IVF, index="hnsw"), r"\[ValidateEpoch\] index = 'hnsw'; use one of flat, ivf"),
    (replace(IVF, nprobe=0), r"\[ValidateEpoch\] nprobe = 0; it must be at least 1"),
])
def test_bad_ivf_settings_are_refused_naming_them(settings: ValidationSettings, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        evaluate_epoch(TRAIN, VAL, settings)


def test_ivf_without_faiss_says_how_to_fix_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError
    with pytest.raises(ConfigError, match=r"index = ivf needs the faiss package \(pip install faiss-cpu\).*flat"):
        evaluate_epoch(TRAIN, VAL, replace(IVF, knn_backend="torch"))


def test_changing_the_index_revalidates_the_epoch(configure, tmp_path: Path, tiny_imagenet: Path) -> None:
    cfg = fast_config(tmp_path, tiny_imagenet)
    configure(cfg)
    assert_succeeded(build([tasks.ValidateEpoch(epoch=0)]))
    metrics_file = Path(tasks.ValidateEpoch(epoch=0).output().path)
    assert "index" not in json.loads(metrics_file.read_text())["settings"]

    cfg["ValidateEpoch"].update(index="ivf", nlist=4, nprobe=1)
    configure(cfg)
    task = tasks.ValidateEpoch(epoch=0)
    assert not task.complete()  # the flat metrics are not the ivf ones
    result = build([task])
    assert_succeeded(result)
    metrics = json.loads(metrics_file.read_text())
    assert metrics["settings"]["index"] == "ivf" and metrics["settings"]["nlist"] == 4
    assert 0 < metrics["ivf_recall_at_30_val"] <= 1 and metrics["ivf_recall_queries"] == 12  # every val image
