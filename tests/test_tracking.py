"""TensorBoard event files as a user opens them: read back with TensorBoard's own
reader, they equal the artifacts they are derived from; a rerun rewrites only its own
events and shows each step once; with tracking off, everything else is the same."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pipeline.embedding.embed import load_embeddings
from pipeline.tracking import EventLog, event_file
from tests.datagen import make_tiny_imagenet
from tests.support import fast_config, luigi_cli, write_overrides

EPOCHS = 2


def _run(tmp: Path, **tracking) -> tuple[Path, Path]:
    cfg = fast_config(tmp, make_tiny_imagenet(tmp / "tiny-imagenet-200", n_classes=3, train_per_class=12,
                                              val_per_class=4))
    cfg["run"]["epochs"] = EPOCHS
    if tracking:
        cfg["tracking"] = tracking
    config = write_overrides(tmp, cfg)
    done = luigi_cli(["RunAll"], config)
    assert done.code == 0, done.output[-4000:]
    return config, tmp / "artifacts" / "test"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    return _run(tmp_path_factory.mktemp("tracked"))


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_the_curves_equal_the_artifacts(run):
    exp = run[1]
    curves = scalars(exp / "tensorboard")
    steps = pd.read_parquet(exp / "train").sort_values(["epoch", "step"], kind="stable").reset_index(drop=True)
    assert [s for s, _ in curves["train/loss"]] == list(range(len(steps)))  # every step once, run-wide
    for column in ("loss", "loss_all", "active_fraction", "lr", "images", "triplets"):
        np.testing.assert_allclose([v for _, v in curves[f"train/{column}"]], steps[column], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in curves["train/images_per_second"]], steps["images"] / steps["seconds"],
                               rtol=1e-5)
    for epoch in range(EPOCHS + 1):
        metrics = json.loads((exp / "metrics" / f"epoch-{epoch:03d}.json").read_text())
        for key in ("precision_at_30_val", "map_at_r_val", "seconds"):
            assert dict(curves[f"metrics/{key}"])[epoch] == pytest.approx(metrics[key], rel=1e-6), key
    (baseline,) = (exp.parent / "baselines").glob("*.json")
    expected = json.loads(baseline.read_text())["precision_at_30_val"]
    assert curves["baseline/precision_at_30_val"] == [(e, pytest.approx(expected, rel=1e-6)) for e in range(EPOCHS + 1)]
    rows = [len(pd.read_parquet(exp / "triplets" / f"epoch-{e:03d}")) for e in range(1, EPOCHS + 1)]
    assert curves["lists/rows"] == [(e, r) for e, r in zip(range(1, EPOCHS + 1), rows)]


def test_the_projector_has_every_validation_image_with_its_label(run):
    exp = run[1]
    config = (exp / "tensorboard" / "projector_config.pbtxt").read_text()
    assert config.count("embeddings {") == EPOCHS + 1
    for epoch in range(EPOCHS + 1):
        folder = exp / "tensorboard" / "projector" / f"epoch-{epoch:03d}"
        assert f'tensor_path: "projector/epoch-{epoch:03d}/tensors.tsv"' in config
        val = load_embeddings(exp / "embeddings" / f"epoch-{epoch:03d}", "val")
        tensors = np.loadtxt(folder / "tensors.tsv", delimiter="\t", ndmin=2)
        np.testing.assert_allclose(tensors, val.vectors, rtol=1e-5, atol=1e-6)
        metadata = pd.read_csv(folder / "metadata.tsv", sep="\t")
        assert metadata["label"].tolist() == val.labels.tolist() and metadata["class"].notna().all()
        assert (folder / "sprite.png").is_file()


def test_a_rerun_rewrites_its_own_events_and_shows_each_step_once(run):
    config, exp = run
    board = exp / "tensorboard"
    mine = event_file(board, "train", 2)
    others = {p.name: p.read_bytes() for p in board.glob("events.out.tfevents.*") if p != mine}
    # What a killed attempt at epoch 2 would have left: a step logged with another value.
    with EventLog(board, "train", 2) as killed:
        killed.scalars(0, {"loss": 99.0}, "train/")
    assert 99.0 in [v for _, v in scalars(board)["train/loss"]]
    shutil.rmtree(exp / "train" / "epoch-002")
    done = luigi_cli(["TrainEpoch", "--epoch", "2"], config)
    assert done.code == 0, done.output[-4000:]
    assert {p.name: p.read_bytes() for p in board.glob("events.out.tfevents.*") if p != mine} == others
    after = scalars(board)["train/loss"]
    assert [s for s, _ in after] == list(range(len(pd.read_parquet(exp / "train"))))
    assert 99.0 not in [v for _, v in after]


def test_tracking_off_changes_nothing_else(run, tmp_path):
    exp = run[1]
    _, quiet = _run(tmp_path, tensorboard="false")
    assert not (quiet / "tensorboard").exists()
    for epoch in range(EPOCHS + 1):
        a, b = (json.loads((e / "metrics" / f"epoch-{epoch:03d}.json").read_text()) for e in (exp, quiet))
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
        weights = [torch.load(e / "train" / f"epoch-{epoch:03d}" / "_checkpoint.pt", weights_only=True)["model"]
                   for e in (exp, quiet)]
        assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
