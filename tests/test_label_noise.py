"""Label noise for experiments (``[run] label_noise``): the flips are a pure function of
(labels, share, kind, seed) on the training split only; sampling, and so training,
sees only the flipped labels; validation scores against the labels the experiment
uses and adds the true-label metrics as ``<key>_true``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tasks
from pipeline.data.label_noise import LabelNoise, flip_labels
from pipeline.errors import ConfigError
from pipeline.experiment_config import RunSettings
from pipeline.sampling.list_files import read_triplet_meta
from tests.support import assert_succeeded, build, fast_config

LABELS = np.repeat(np.arange(10), 100)


@pytest.mark.parametrize("kind", ["symmetric", "pairs"])
def test_flips_are_exactly_the_share_seeded_and_never_the_same_class(kind):
    flipped = flip_labels(LABELS, LabelNoise(0.2, kind), seed=3)
    changed = flipped != LABELS
    assert changed.sum() == 200
    assert np.array_equal(flipped, flip_labels(LABELS, LabelNoise(0.2, kind), seed=3))
    assert not np.array_equal(flipped, flip_labels(LABELS, LabelNoise(0.2, kind), seed=4))
    assert flipped.min() >= 0 and flipped.max() <= 9
    if kind == "pairs":  # one fixed confusable class per class
        assert np.array_equal(flipped[changed], (LABELS[changed] + 1) % 10)
    else:  # every other class is reached
        assert len(np.unique((flipped[changed] - LABELS[changed]) % 10)) == 9


def test_no_noise_is_the_true_labels_and_a_copy():
    flipped = flip_labels(LABELS, LabelNoise(), seed=0)
    assert np.array_equal(flipped, LABELS) and flipped is not LABELS


def test_a_kind_without_noise_and_a_share_of_one_are_refused():
    with pytest.raises(ConfigError, match=r"\[run\] label_noise_kind = 'pairs' with \[run\] label_noise = 0.0"):
        RunSettings(label_noise_kind="pairs").noise()
    with pytest.raises(ConfigError, match=r"\[run\] label_noise = 1.0.*below 1"):
        RunSettings(label_noise=1.0).noise()
    assert RunSettings().recorded_noise() == {}  # experiments recorded before label noise stay current


def _noisy(configure, tmp_path: Path, root: Path, share: float, **sections) -> Path:
    cfg = fast_config(tmp_path, root)
    cfg["run"].update(label_noise=share, epochs=1)
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    configure(cfg)
    return tmp_path / "artifacts" / "test"


def _train_labels(exp: Path) -> pd.Series:
    (ds,) = [p for p in (exp.parent / "datasets").iterdir() if not p.name.startswith(".")]
    index = pd.read_parquet(ds / "index.parquet")
    train = index[index["split"] == "train"].sort_values("image_id")
    return pd.Series(train["label"].to_numpy(), index=train["image_id"].to_numpy())


@pytest.mark.parametrize("strategy", ["uniform", "batched"])
def test_lists_are_sampled_from_the_flipped_labels_only(configure, tmp_path, tiny_imagenet, strategy):
    """Poisoned truth: with 40% of the labels flipped, a list drawn from the true labels would pair
    images of different flipped classes; every row must agree with the flipped ones instead."""
    lists = {"strategy": strategy} if strategy == "uniform" else {
        "strategy": "batched", "batch_classes": 3, "batch_seeds": 4, "triplets_per_query": 4}
    exp = _noisy(configure, tmp_path, tiny_imagenet, 0.4, TripletList=lists)
    assert_succeeded(build([tasks.TripletList(epoch=1)]))
    true = _train_labels(exp)
    used = pd.Series(flip_labels(true.to_numpy(), LabelNoise(0.4), seed=0), index=true.index)
    trip = pd.read_parquet(exp / "triplets" / "epoch-001", partitioning=None)
    assert read_triplet_meta(exp / "triplets" / "epoch-001")["label_noise"] == {"share": 0.4, "kind": "symmetric"}
    q, p, n = (trip[c].to_numpy() for c in ("query", "positive", "negative"))
    assert (used[q].to_numpy() == used[p].to_numpy()).all()
    assert (used[q].to_numpy() != used[n].to_numpy()).all()
    # What training reads (batched lists' in-batch labels) is the flipped labels too.
    assert np.array_equal(trip["query_label"].to_numpy(), used[q].to_numpy())
    assert np.array_equal(trip["negative_label"].to_numpy(), used[n].to_numpy())
    # The truth would have failed: some rows pair images the true labels put in different classes.
    assert (true[q].to_numpy() != true[p].to_numpy()).any()


def test_validation_reports_the_used_and_the_true_labels(configure, tmp_path, tiny_imagenet, task_errors):
    exp = _noisy(configure, tmp_path, tiny_imagenet, 0.3)
    assert_succeeded(build([tasks.ValidateEpoch(epoch=1)]))
    metrics = json.loads((exp / "metrics" / "epoch-001.json").read_text())
    assert metrics["settings"]["label_noise"] == 0.3 and metrics["settings"]["label_noise_kind"] == "symmetric"
    for key in ("precision_at_30_val", "precision_at_1_train", "r_precision_val", "map_at_r_val"):
        assert f"{key}_true" in metrics, key
    assert "triplet_precision_val_true" not in metrics  # validation triplets never read training labels
    # The gallery's labels differ, so the two scorings of the same neighbours differ.
    assert metrics["precision_at_30_val"] != metrics["precision_at_30_val_true"]
    # The report's accuracy table shows both.
    assert_succeeded(build([tasks.Report(epochs=1)]))
    summary = (exp / "report" / "epochs-001" / "summary.md").read_text()
    assert "precision@30 (val, true labels)" in summary
    # The noise is part of the experiment: changing it is refused, not silently mixed in.
    _noisy(configure, tmp_path, tiny_imagenet, 0.2)
    with pytest.raises(ConfigError, match=r"\[run\] label_noise: was 0.3, now 0.2"):
        tasks.TripletList(epoch=1).complete()


def test_without_noise_nothing_changes(configure, tmp_path, tiny_imagenet):
    exp = _noisy(configure, tmp_path, tiny_imagenet, 0.0)
    assert_succeeded(build([tasks.ValidateEpoch(epoch=1)]))
    metrics = json.loads((exp / "metrics" / "epoch-001.json").read_text())
    assert not [k for k in metrics if k.endswith("_true")]
    assert "label_noise" not in metrics["settings"]
    assert "label_noise" not in json.loads((exp / "config.json").read_text())["run"]
