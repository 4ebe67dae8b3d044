"""Validation tasks: parallel ValidateEpochs equals a one-worker run, the metric
files hold the documented keys, every query's record and the class confusion
match a brute-force search, an epoch missing a sidecar is validated again, and
the raw-pixel baseline beats chance."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import luigi
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tasks
from pipeline.data.pixel_store import read_index
from pipeline.embedding.embed import load_embeddings
from pipeline.evaluation.breakdown import QUERIES_SCHEMA
from tests.support import assert_succeeded, build, fast_config

REPO = Path(__file__).resolve().parents[1]


def run_section(cfg: dict) -> dict:
    """The section of ``cfg`` holding experiment name, seed and epochs (whatever it is called)."""
    return next(values for values in cfg.values() if "epochs" in values)

METRIC_KEYS = ("precision_at_30_val", "precision_at_30_train", "precision_at_1_val", "r_precision_val",
               "map_at_r_val", "triplet_precision_val")
EPOCHS = (1, 2, 3)


@pytest.fixture
def trained(configure, tmp_path: Path, tiny_imagenet: Path) -> Path:
    """Three trained and embedded epochs (no validation yet); returns the experiment folder."""
    cfg = fast_config(tmp_path, tiny_imagenet)
    run_section(cfg)["epochs"] = 3
    configure(cfg)
    result = build([tasks.EmbedEpoch(epoch=e) for e in EPOCHS])
    assert_succeeded(result)
    exp = tmp_path / "artifacts" / "test"
    assert not (exp / "metrics").exists()
    return exp


def read_metrics(exp: Path) -> dict[int, tuple[dict, pd.DataFrame, pd.DataFrame, list[pd.DataFrame]]]:
    """Per epoch: the JSON, the per-class and figure-neighbour sidecars, and the other sidecars."""
    out = {}
    for e in EPOCHS:
        base = exp / "metrics"
        metrics = json.loads((base / f"epoch-{e:03d}.json").read_text())
        tables = {name: pd.read_parquet(base / name / f"epoch-{e:03d}.parquet")
                  for name in ("per_class", "neighbors", "queries", "confusion")}
        out[e] = (metrics, tables["per_class"], tables["neighbors"], [tables["queries"], tables["confusion"]])
    return out


def test_parallel_validate_epochs_equals_one_worker(trained: Path):
    result = build([tasks.ValidateEpochs(epochs=list(EPOCHS))], workers=3)
    assert_succeeded(result)
    parallel = read_metrics(trained)
    assert sorted(p.name for p in (trained / "metrics").iterdir() if p.suffix == ".json") == [
        "epoch-001.json", "epoch-002.json", "epoch-003.json"]

    shutil.rmtree(trained / "metrics")
    result = build([tasks.ValidateEpochs(epochs=list(EPOCHS))], workers=1)
    assert_succeeded(result)
    serial = read_metrics(trained)

    for e in EPOCHS:
        (pm, pc, pn, po), (sm, sc, sn, so) = parallel[e], serial[e]
        assert pm["epoch"] == e
        assert {k: v for k, v in pm.items() if k != "seconds"} == {k: v for k, v in sm.items() if k != "seconds"}
        pd.testing.assert_frame_equal(pc, sc)
        pd.testing.assert_frame_equal(pn, sn)
        for p_frame, s_frame in zip(po, so):
            pd.testing.assert_frame_equal(p_frame, s_frame)
    # Different epochs give different numbers (each task read its own epoch's embeddings).
    assert parallel[1][2]["distance"].tolist() != parallel[3][2]["distance"].tolist()


def test_validate_epoch_writes_the_documented_metrics(trained: Path, tmp_path: Path):
    result = build([tasks.ValidateEpoch(epoch=3)])
    assert_succeeded(result)
    metrics = json.loads((trained / "metrics" / "epoch-003.json").read_text())
    for key in METRIC_KEYS:
        assert key in metrics, key
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["epoch"] == 3
    assert metrics["queries_val"] == 12  # every validation image is a query
    assert metrics["queries_train"] == 12  # [ValidateEpoch] train_queries

    per_class = pd.read_parquet(trained / "metrics" / "per_class/epoch-003.parquet")
    assert list(per_class.columns) == ["epoch", "label", "n_queries", "precision_at_30"]
    assert per_class["epoch"].dtype == np.int32 and (per_class["epoch"] == 3).all()
    assert per_class["label"].tolist() == [0, 1, 2]  # one row per class
    assert per_class["n_queries"].tolist() == [4, 4, 4]
    assert per_class["precision_at_30"].mean() == pytest.approx(metrics["precision_at_30_val"])

    neighbors = pd.read_parquet(trained / "metrics" / "neighbors/epoch-003.parquet")
    assert set(neighbors["kind"]) == {"nearest", "farthest"}
    assert len(neighbors) == 2 * 2 * 3  # figure_queries x figure_k, nearest and farthest
    train_ids = set(read_index(next((tmp_path / "artifacts" / "datasets").iterdir()))
                    .query("split == 'train'")["image_id"])
    assert set(neighbors["image_id"]) <= train_ids

    # Every validation query's precision@30 and 3 (figure_k) nearest training ids, and the
    # class confusion over the 30 nearest, as a brute-force search over the saved vectors finds them.
    train = load_embeddings(trained / "embeddings" / "epoch-003", "train")
    val = load_embeddings(trained / "embeddings" / "epoch-003", "val")
    d = ((val.vectors[:, None, :].astype(np.float64) - train.vectors[None].astype(np.float64)) ** 2).sum(-1)
    order = np.argsort(d, axis=1, kind="stable")
    queries = pq.read_table(trained / "metrics" / "queries/epoch-003.parquet")
    assert queries.schema.remove_metadata() == QUERIES_SCHEMA.insert(0, pa.field("epoch", pa.int32()))
    queries = queries.to_pandas()
    assert queries["image_id"].tolist() == val.image_ids.tolist() and queries["label"].tolist() == val.labels.tolist()
    np.testing.assert_allclose(queries["precision"], (train.labels[order[:, :30]] == val.labels[:, None]).mean(1))
    assert [list(n) for n in queries["neighbors"]] == train.image_ids[order[:, :3]].tolist()
    confusion = pd.read_parquet(trained / "metrics" / "confusion/epoch-003.parquet")
    expected = Counter((int(q), int(n)) for q, row in zip(val.labels, train.labels[order[:, :30]]) for n in row)
    assert {(q, n): c for _, q, n, c in confusion.itertuples(index=False)} == dict(expected)


def test_pixel_baseline_beats_chance(fast_pipeline, tmp_path: Path):
    result = build([tasks.PixelBaseline()])
    assert_succeeded(result)
    (path,) = (tmp_path / "artifacts" / "baselines").iterdir()
    assert path.name == "tiny-imagenet-16px-k30-px32-seed0.json"
    metrics = json.loads(path.read_text())
    for key in METRIC_KEYS:
        assert key in metrics, key
    # 3 balanced classes: chance is 1/3 for every precision. The generated classes differ in hue,
    # so raw pixels find the right class almost always.
    assert metrics["precision_at_1_val"] >= 0.9
    assert metrics["r_precision_val"] >= 0.7
    assert metrics["map_at_r_val"] >= 0.7
    assert metrics["triplet_precision_val"] >= 0.8
    # precision@30 is capped at 12/30 here (12 training images per class), chance ~1/3.
    assert metrics["precision_at_30_val"] > 0.36


def test_pixel_baseline_with_other_settings_is_recomputed(fast_pipeline, tmp_path: Path):
    result = build([tasks.PixelBaseline()])
    assert_succeeded(result)
    result = build([tasks.PixelBaseline(max_size=8)])
    assert_succeeded(result)
    files = {p.name: json.loads(p.read_text()) for p in (tmp_path / "artifacts" / "baselines").iterdir()}
    assert 8 in [m["max_size"] for m in files.values()], f"max_size recorded: {[m['max_size'] for m in files.values()]}"


def test_validate_epoch_with_another_k_is_recomputed(fast_pipeline, tmp_path: Path):
    result = build([tasks.ValidateEpoch(epoch=0)])
    assert_succeeded(result)
    result = build([tasks.ValidateEpoch(epoch=0, k=5)])
    assert_succeeded(result)
    metrics = json.loads((tmp_path / "artifacts" / "test" / "metrics" / "epoch-000.json").read_text())
    assert "precision_at_5_val" in metrics, sorted(metrics)


def test_report_shows_failures_and_revalidates_an_epoch_missing_a_sidecar(configure, tmp_path: Path,
                                                                          tiny_imagenet: Path):
    cfg = fast_config(tmp_path, tiny_imagenet)
    run_section(cfg)["epochs"] = 1
    config = configure(cfg)
    assert_succeeded(build([tasks.RunAll()]))
    exp = tmp_path / "artifacts" / "test"
    report = exp / "report" / "epochs-001"
    page = (report / "index.html").read_text()
    for heading in ("Worst queries", "Precision by class", "Class confusion"):
        assert f"<h2>{heading}</h2>" in page, heading
    assert (report / "worst_queries.png").is_file() and (report / "confusion.png").is_file()
    assert "![worst queries](worst_queries.png)" in (report / "summary.md").read_text()
    before = json.loads((exp / "metrics" / "epoch-001.json").read_text())

    # As if epoch 1 was validated by a version that wrote fewer sidecars. The command runs
    # in tmp_path, so only the test's luigi.cfg applies (not the repository's).
    (exp / "metrics" / "queries/epoch-001.parquet").unlink()
    env = dict(os.environ, PYTHONPATH=str(REPO), LUIGI_CONFIG_PATH=str(config), OMP_NUM_THREADS="1")
    proc = subprocess.run([str(Path(sys.executable).parent / "luigi"), "--module", "tasks", "Report",
                           "--local-scheduler"], cwd=tmp_path, env=env, timeout=300, check=False, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace")
    assert proc.returncode == 0, proc.stdout[-4000:]
    summary = proc.stdout.split("===== Luigi Execution Summary =====", 1)[1]
    assert "ran successfully:" in summary, summary
    ran = summary.split("ran successfully:", 1)[1].split("\n\n", 1)[0]
    assert "1 ValidateEpoch(" in ran and "1 Report(" in ran and "TrainEpoch" not in ran, summary
    assert (exp / "metrics" / "queries/epoch-001.parquet").is_file()
    after = json.loads((exp / "metrics" / "epoch-001.json").read_text())
    assert {k: v for k, v in after.items() if k != "seconds"} == {k: v for k, v in before.items() if k != "seconds"}


def test_report_is_rebuilt_when_validation_settings_change(fast_pipeline, tmp_path: Path):
    assert_succeeded(build([tasks.RunAll()]))
    report = tmp_path / "artifacts" / "test" / "report" / "epochs-002" / "summary.md"
    before = report.stat().st_mtime_ns
    luigi.configuration.get_config().set("ValidateEpoch", "train_queries", "6")
    luigi.task_register.Register.clear_instance_cache()
    assert not tasks.RunAll().complete()
    assert_succeeded(build([tasks.RunAll()]))
    assert report.stat().st_mtime_ns != before
    metrics = json.loads((tmp_path / "artifacts" / "test" / "metrics" / "epoch-002.json").read_text())
    assert metrics["queries_train"] == 6
