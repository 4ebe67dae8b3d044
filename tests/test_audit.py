"""The label audit (``AuditEpoch``): on constructed embeddings it finds the planted
label flips, duplicates, leakage and outliers, with a threshold that never reads
the true labels; on a small noisy experiment the command writes the audit, redoes
it when a setting changes, and ``python -m pipeline.show audit`` prints it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import tasks
from pipeline.audit.findings import audit_tables, auroc, exact_duplicates, suspect_labels
from pipeline.audit.settings import AuditSettings
from pipeline.storage import write_epoch_tables
from tests.support import REPO, TIMEOUT, assert_succeeded, build, fast_config, luigi_cli, write_overrides

N_CLASSES, PER_CLASS, DIM = 6, 50, 8


@pytest.fixture(scope="module")
def planted():
    """Well-separated Gaussian classes, 10% of the labels flipped, one far outlier."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (N_CLASSES, DIM))
    true = np.repeat(np.arange(N_CLASSES), PER_CLASS)
    epochs = [(centres[true] + rng.normal(0, 1, (len(true), DIM))).astype(np.float32) for _ in range(3)]
    given = true.copy()
    flipped = rng.choice(len(true), size=len(true) // 10, replace=False)
    given[flipped] = (true[flipped] + rng.integers(1, N_CLASSES, len(flipped))) % N_CLASSES
    for vectors in epochs:
        vectors[7] = 200.0  # far from everything, its own class included
    return epochs, true, given


def _audit(epochs, given, truth=None, val=None, exact=None):
    val_vectors, val_ids = val if val is not None else (None, None)
    return audit_tables(epochs, np.arange(len(given)) + 1000, given, AuditSettings(knn_backend="torch"),
                        val_vectors=val_vectors, val_ids=val_ids, duplicates=exact, true_labels=truth)


def test_the_planted_flips_are_the_suspects(planted):
    epochs, true, given = planted
    images, _, summary = _audit(epochs, given, truth=true)
    detection = summary["detection"]
    assert detection["recall"] >= 0.9 and detection["precision"] >= 0.8, detection
    assert detection["auroc"] >= 0.95, detection
    flipped = images["flipped"].to_numpy()
    # A suspect's suggested label is its true class.
    found = images["suspect"].to_numpy() & flipped
    assert (images["suggested_label"].to_numpy()[found] == true[found]).mean() >= 0.9
    assert images["outlier_score"].to_numpy().argmax() == 7


def test_the_threshold_never_reads_the_true_labels(planted):
    epochs, true, given = planted
    blind, _, _ = _audit(epochs, given)
    # A wrong "truth" (other images flipped than those that were): only the scores may change.
    poisoned = given.copy()
    elsewhere = np.random.default_rng(1).choice(len(given), size=len(given) // 10, replace=False)
    poisoned[elsewhere] = (given[elsewhere] + 1) % N_CLASSES
    told, _, summary = _audit(epochs, given, truth=poisoned)
    assert np.array_equal(blind["suspect"], told["suspect"])
    assert np.array_equal(blind["suggested_label"], told["suggested_label"])
    assert summary["detection"]["precision"] < 0.5


def test_a_label_no_neighbour_shares_is_a_suspect_below_the_quality_floor():
    """A flip whose neighbours spread over several classes, none of them confidently, is caught by
    ``quality_floor`` alone; an ambiguous image that keeps most of its class's votes is not."""
    shares = np.tile([0.94, 0.02, 0.02, 0.02], (40, 1))  # class 0's images; its threshold is about 0.87
    shares[0] = [0.10, 0.30, 0.30, 0.30]  # the flip: no other class reaches 0.94
    shares[1] = [0.60, 0.40, 0.00, 0.00]  # ambiguous: above half its class's threshold
    given = np.zeros(40, dtype=np.int64)
    _, _, without = suspect_labels(shares, given, floor=0.0)
    suggested, quality, with_floor = suspect_labels(shares, given, floor=0.5)
    assert not without.any()
    assert np.flatnonzero(with_floor).tolist() == [0] and quality[0] == pytest.approx(0.1)
    assert suggested[0] == 1  # the most voted class, first of the tied ones


def test_more_pooled_epochs_help_where_one_epoch_is_unlucky():
    """The memory bank: an image whose neighbourhood is wrong in one epoch only is not a suspect
    once three epochs vote."""
    rng = np.random.default_rng(2)
    true = np.repeat(np.arange(2), 20)
    good = np.where(true[:, None] == 0, -5.0, 5.0) + rng.normal(0, 0.5, (40, 2))
    bad = good.copy()
    bad[0] = [5.0, 5.0]  # epoch 0 puts image 0 among class 1
    one, _, _ = _audit([bad.astype(np.float32)], true)
    pooled, _, _ = _audit([bad.astype(np.float32), good.astype(np.float32), good.astype(np.float32)], true)
    assert one["suspect"].iloc[0] and not pooled["suspect"].iloc[0]


def test_duplicates_and_leakage_are_found(planted):
    epochs, _, given = planted
    pixels = np.random.default_rng(3).integers(0, 255, (400, 4, 4, 1), dtype=np.uint8)
    pixels[301] = pixels[5]  # an exact duplicate of training image 5, in the validation split
    ids = np.arange(400)
    splits = np.where(ids < 300, "train", "val").astype(object)
    pixels[12] = pixels[11]  # and one inside the training split
    exact = exact_duplicates(pixels, ids, splits)
    assert {(5, 301), (11, 12)} == {tuple(sorted(p)) for p in zip(exact["image_id"], exact["duplicate_of"])}
    near_val = epochs[0][[20]] + 1e-4  # a validation vector all but equal to training image 20's
    _, pairs, summary = _audit(epochs, given, val=(near_val, np.array([9000])),
                               exact=exact.assign(image_id=exact["image_id"] + 1000,
                                                  duplicate_of=exact["duplicate_of"] + 1000))
    near = pairs[pairs["kind"] == "near"]
    assert ((near["image_id"] == 9000) & (near["duplicate_of"] == 1020) & near["leakage"]).any()
    assert summary["leakage"] == 2 and summary["exact_duplicates"] == 2


def test_the_pooled_epochs_reach_back_to_the_first(luigi_registry):
    from pipeline.audit.settings import pooled_epochs

    assert pooled_epochs(14, 5) == [14, 11, 8, 4, 1]
    assert pooled_epochs(3, 5) == [3, 2, 1] and pooled_epochs(1, 5) == [1] and pooled_epochs(0, 5) == [0]
    assert tasks.AuditEpoch(epoch=3, epochs=2).requires()["embeddings"] == [tasks.EmbedEpoch(epoch=3),
                                                                              tasks.EmbedEpoch(epoch=1)]


def test_auroc():
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([False, False, True, True])) == 1.0
    assert auroc(np.array([0.5, 0.5]), np.array([False, True])) == 0.5


def test_run_all_audits_the_last_epoch_and_the_report_shows_it(tmp_path, tiny_imagenet):
    cfg = fast_config(tmp_path, tiny_imagenet)
    cfg["run"].update(label_noise=0.2)
    cfg["run"]["epochs"] = 1
    config = write_overrides(tmp_path, cfg)
    done = luigi_cli(["RunAll"], config)  # its report includes the last epoch's audit
    assert done.code == 0, done.output[-4000:]
    audit = tmp_path / "artifacts" / "test" / "audit"
    summary = json.loads((audit / "epoch-001.json").read_text())
    images = pd.read_parquet(audit / "images" / "epoch-001.parquet")
    assert (images["epoch"] == 1).all()
    # epoch 0's random network never votes
    assert summary["images"] == len(images) == 36 and summary["epochs_pooled"] == 1
    assert summary["flipped"] == int(images["flipped"].sum()) == 7  # round(0.2 * 36)
    assert 0.0 <= summary["detection"]["auroc"] <= 1.0
    assert summary["settings"]["label_noise"] == 0.2
    shown = subprocess.run([sys.executable, "-m", "pipeline.show", "--artifacts", str(tmp_path / "artifacts"),
                            "audit", "--experiment", "test", "--epoch", "1"], cwd=REPO, capture_output=True,
                           text=True, timeout=TIMEOUT)
    assert shown.returncode == 0, shown.stderr
    assert "most suspect labels" in shown.stdout and '"suspects"' in shown.stdout
    report = tmp_path / "artifacts" / "test" / "report" / "epochs-001"
    page = (report / "summary.md").read_text()
    assert "## Label audit (epoch 1)" in page and "labels flipped for this experiment | 7" in page
    assert (report / "label_quality.png").is_file()
    assert ((report / "suspect_labels.png").is_file() and "suspect_labels.png" in page) == (summary["suspects"] > 0)
    assert "No validation image duplicates a training image." in page or "cross_split_duplicates.png" in page


def test_a_changed_setting_redoes_the_audit(configure, tmp_path, tiny_imagenet):
    cfg = fast_config(tmp_path, tiny_imagenet)
    cfg["run"]["epochs"] = 1
    configure(cfg)
    assert_succeeded(build([tasks.AuditEpoch(epoch=1)]))
    audit = tmp_path / "artifacts" / "test" / "audit" / "epoch-001.json"
    assert json.loads(audit.read_text())["k"] == 20
    assert tasks.AuditEpoch(epoch=1).complete()
    cfg["AuditEpoch"] = {"k": 5}
    configure(cfg)
    assert not tasks.AuditEpoch(epoch=1).complete()
    assert_succeeded(build([tasks.AuditEpoch(epoch=1)]))
    assert json.loads(audit.read_text())["k"] == 5


# --------------------------------------------------------------------------- lists that use the audit


def _indexed(configure, tmp_path, tiny_imagenet, **lists):
    cfg = fast_config(tmp_path, tiny_imagenet)
    cfg["TripletList"].update(lists)
    configure(cfg)
    assert_succeeded(build([tasks.IndexDataset()]))
    (dataset,) = [p for p in (tmp_path / "artifacts" / "datasets").iterdir() if not p.name.startswith(".")]
    index = pd.read_parquet(dataset / "index.parquet")
    return dataset, index[index["split"] == "train"].sort_values("image_id")


def _planted_audit(folder, train, suspects):
    """An audit (its summary's path) whose images table flags ``suspects``."""
    flagged = train["image_id"].isin(suspects).to_numpy()
    summary = folder / "epoch-001.json"
    write_epoch_tables(summary, {"images": pd.DataFrame({
        "image_id": train["image_id"].to_numpy(), "given_label": train["label"].to_numpy(),
        "suggested_label": (train["label"].to_numpy() + 1) % 3, "quality": 0.5, "suspect": flagged,
        "outlier_score": 1.0})}, 1)
    summary.write_text("{}")
    return summary


@pytest.mark.parametrize("mode", ["exclude", "relabel"])
def test_suspects_are_left_out_or_relabelled(configure, tmp_path, tiny_imagenet, mode):
    from pipeline.sampling import ListSettings
    from pipeline.sampling.list_files import read_triplet_meta, read_triplets, sample_epoch_list

    dataset, train = _indexed(configure, tmp_path, tiny_imagenet)
    suspects = train["image_id"].to_numpy()[[0, 5, 13, 20]]
    audit = _planted_audit(tmp_path / "audit", train, suspects)
    settings = ListSettings(strategy="uniform", suspects=mode, audit_from=1, triplets_per_query=2)
    sample_epoch_list(dataset, None, tmp_path / "list", settings.sampler(2), settings, epoch=2, seed=0, margin=1.0,
                      recorded={}, audit_file=audit)
    trip = read_triplets(tmp_path / "list")
    assert read_triplet_meta(tmp_path / "list")["suspects"] == {mode: 4}
    roles = np.concatenate([trip[c].to_numpy() for c in ("query", "positive", "negative")])
    labels = train.set_index("image_id")["label"]
    if mode == "exclude":  # no anchor, positive or negative is a suspect
        assert not np.isin(roles, suspects).any()
        assert trip["query"].nunique() == len(train) - 4
    else:  # a suspect is sampled as its suggested class
        as_query = trip[trip["query"].isin(suspects)]
        assert len(as_query) == 8
        assert np.array_equal(as_query["query_label"].to_numpy(),
                              (labels[as_query["query"]].to_numpy() + 1) % 3)


def test_a_batched_epoch_forwards_as_many_images_with_its_suspects_left_out(configure, tmp_path, tiny_imagenet):
    """Leaving suspects out changes what an epoch forwards, not how much: ``image_passes``
    counts the whole training split, so an epoch costs the same and compares at equal images."""
    from pipeline.sampling import ListSettings
    from pipeline.sampling.list_files import read_triplets, sample_epoch_list

    dataset, train = _indexed(configure, tmp_path, tiny_imagenet)
    suspects = train["image_id"].to_numpy()[[0, 5, 13, 20]]
    audit = _planted_audit(tmp_path / "audit", train, suspects)
    forwarded = {}
    for mode in ("keep", "exclude"):
        settings = ListSettings(strategy="batched", suspects=mode, batch_classes=3, batch_seeds=2, image_passes=3,
                                triplets_per_anchor=2, **({"audit_from": 1} if mode != "keep" else {}))
        sample_epoch_list(dataset, None, tmp_path / mode, settings.sampler(2), settings, epoch=2, seed=0,
                          margin=1.0, recorded={}, audit_file=audit)
        trip = read_triplets(tmp_path / mode)
        images = trip.melt(id_vars="batch", value_vars=["query", "positive", "negative"])
        forwarded[mode] = int(images.drop_duplicates(["batch", "value"]).shape[0])
        assert not mode == "exclude" or not images["value"].isin(suspects).any()
    batch = 3 * 2  # classes x seeds: no hard negatives without embeddings
    for count in forwarded.values():
        assert 3 * len(train) <= count < 3 * len(train) + batch, forwarded


def test_the_list_reads_the_audit_of_the_epoch_before_from_audit_from(configure, tmp_path, tiny_imagenet):
    _indexed(configure, tmp_path, tiny_imagenet, strategy="uniform", suspects="exclude", audit_from=3)
    assert "audit" not in tasks.TripletList(epoch=2).requires()
    assert tasks.TripletList(epoch=3).requires()["audit"] == tasks.AuditEpoch(epoch=2)
    cfg = fast_config(tmp_path, tiny_imagenet)
    cfg["TripletList"].update(strategy="uniform", audit_from=2)  # suspects = keep: audit_from is never read
    configure(cfg)
    from pipeline.errors import ConfigError
    with pytest.raises(ConfigError, match=r"\[TripletList\] audit_from = 2 with \[TripletList\] suspects = 'keep'"):
        tasks.TripletList(epoch=2).requires()


def test_the_report_section_shows_the_suspects_and_the_leaked_pairs(planted, tmp_path):
    from pipeline.embedding.embed import write_shards
    from pipeline.reporting.experiment_report import audit_report
    from pipeline.reporting.figures import CROSS_SPLIT_DUPLICATES, LABEL_QUALITY, SUSPECT_LABELS

    epochs, true, given = planted
    n = len(true)
    ids = np.arange(n + 20)
    splits = np.where(ids < n, "train", "val").astype(object)
    pixels = np.random.default_rng(4).integers(0, 255, (len(ids), 6, 6, 1), dtype=np.uint8)
    pixels[n + 3] = pixels[5]  # validation image n+3 is training image 5
    labels = np.concatenate([true, np.arange(20) % N_CLASSES])
    index = pd.DataFrame({"image_id": ids, "split": splits, "label": labels,
                          "class_name": [f"class {c}" for c in labels]})
    images, pairs, summary = audit_tables(epochs, ids[:n], given, AuditSettings(knn_backend="torch"),
                                          duplicates=exact_duplicates(pixels, ids, splits), true_labels=true)
    audit = tmp_path / "audit" / "epoch-003.json"
    write_epoch_tables(audit, {"images": images, "duplicates": pairs}, 3)
    audit.write_text(json.dumps(summary))
    write_shards(tmp_path / "emb", index.iloc[:n], epochs[0], epoch=1)
    figures, tables = audit_report(audit, tmp_path / "emb", pixels, index, tmp_path, epoch=3)
    assert set(figures) == {SUSPECT_LABELS, CROSS_SPLIT_DUPLICATES, LABEL_QUALITY}
    assert all(path.is_file() for path in figures.values())
    # The least trusted labels come first: the planted flips, and the planted outlier (image 7), whose
    # neighbours are any class's.
    assert tables.suspects.rows and all(row[-1] == "yes" or row[1] == "7" for row in tables.suspects.rows)
    assert [float(row[4]) for row in tables.suspects.rows] == sorted(float(row[4]) for row in tables.suspects.rows)
    found = dict(tables.summary.rows)
    assert found["validation images duplicating a training image (leakage)"] == "1"
    assert found["labels flipped for this experiment"] == str(int((true != given).sum()))
