"""Batch-structured triplet lists: what a batch holds, the rules its triplets obey,
one forward per distinct image, the loss over the listed triplets, and the
course's plain lists left exactly as they were."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.network import build_model
from pipeline.sampling import BatchOptions, ClassMembers, ListSettings, SamplingContext, get_strategy, sample_triplets
from pipeline.sampling.batched import compose_batches
from pipeline.training.loop import train_one_epoch
from pipeline.training.losses import all_triplet_losses, reduce_losses
from pipeline.training.optimization import make_optimizer
from pipeline.training.settings import LossSettings, TrainSettings
from pipeline.training.steps import batch_steps
from tests.test_training import CPU, SMALL

MARGIN = 1.0


def clustered(n_classes: int = 6, per_class: int = 40, dim: int = 8, seed: int = 0):
    """Labels and embeddings with overlapping classes, so every rule has members."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    centres = rng.normal(size=(n_classes, dim)) * 1.2
    return labels, (centres[labels] + rng.normal(size=(labels.size, dim))).astype(np.float32)


def batched_table(labels, emb, epoch=2, seed=0, **options) -> pd.DataFrame:
    ctx = SamplingContext(classes=ClassMembers.from_labels(labels), epoch=epoch, seed=seed, margin=MARGIN,
                          embeddings=emb)
    ids = np.arange(labels.size) + 1000  # image ids differ from positions on purpose
    return sample_triplets(ctx, get_strategy("batched", **options), ids).to_pandas()


@pytest.mark.parametrize("rule", ["active", "semihard", "hard", "uniform"])
def test_listed_triplets_stay_in_their_batch_and_obey_their_rule(rule):
    labels, emb = clustered()
    df = batched_table(labels, emb, batch_classes=4, batch_seeds=5, image_passes=2, triplets_per_anchor=6,
                       triplet_rule=rule)
    ctx = SamplingContext(classes=ClassMembers.from_labels(labels), epoch=2, seed=0, margin=MARGIN, embeddings=emb)
    batches = compose_batches(ctx, BatchOptions(batch_classes=4, batch_seeds=5, image_passes=2))
    assert df["batch"].nunique() == len(batches)
    pos = {b: set((members + 1000).tolist()) for b, members in enumerate(batches)}
    for b, rows in df.groupby("batch"):
        used = set(rows[["query", "positive", "negative"]].to_numpy().ravel().tolist())
        assert used <= pos[b]  # only images of that batch
    q, p, n = (df[c].to_numpy() - 1000 for c in ("query", "positive", "negative"))
    assert (labels[q] == labels[p]).all() and (q != p).all() and (labels[q] != labels[n]).all()
    d_ap = np.linalg.norm(emb[q] - emb[p], axis=1)
    d_an = np.linalg.norm(emb[q] - emb[n], axis=1)
    np.testing.assert_allclose(df["d_qp"], d_ap, rtol=1e-5)
    np.testing.assert_allclose(df["d_qn"], d_an, rtol=1e-5)
    ruled = df["strategy"].to_numpy() == rule
    obeys = {"active": d_an < d_ap + MARGIN, "semihard": (d_ap < d_an) & (d_an < d_ap + MARGIN),
             "hard": d_an < d_ap, "uniform": np.ones(len(df), bool)}[rule]
    assert ruled.any()
    assert obeys[ruled].all()  # every row labelled with the rule obeys it
    if rule != "uniform":
        assert set(df["strategy"]) <= {rule, f"{rule}-uniform"}


def test_batches_hold_p_classes_of_k_seeds_plus_hard_negatives():
    labels, emb = clustered(n_classes=8, per_class=30)
    ctx = SamplingContext(classes=ClassMembers.from_labels(labels), epoch=3, seed=1, margin=MARGIN, embeddings=emb)
    options = BatchOptions(batch_classes=3, batch_seeds=4, image_passes=2, hard_share=1.0, hard_top=3)
    batches = compose_batches(ctx, options)
    sizes = [m.size for m in batches]
    budget = 2 * labels.size  # image_passes x training images forwarded
    assert sum(sizes) >= budget and sum(sizes) - sizes[-1] < budget
    for members in batches:
        assert 12 <= members.size <= 24  # 3 x 4 seeds, plus up to one hard negative each
        assert np.unique(labels[members]).size >= 3
    # Without embeddings: plain P x K batches, no hard negatives.
    plain = compose_batches(SamplingContext(classes=ctx.classes, epoch=3, seed=1), options)
    assert all(m.size == 12 and np.unique(labels[m]).size == 3 for m in plain)
    assert len(plain) == budget // 12
    seeds = np.bincount(np.concatenate(plain), minlength=labels.size)
    for c in range(8):  # within a class, every image a seed equally often (classes are drawn at random)
        counts = seeds[labels == c]
        assert counts.max() - counts.min() <= 1, (c, counts)


def test_hard_negatives_are_the_nearest_other_class_images():
    labels, emb = clustered(n_classes=4, per_class=25)
    ctx = SamplingContext(classes=ClassMembers.from_labels(labels), epoch=2, seed=0, embeddings=emb)
    with_hard = compose_batches(ctx, BatchOptions(batch_classes=2, batch_seeds=3, hard_share=1.0, hard_top=1))
    without = compose_batches(ctx, BatchOptions(batch_classes=2, batch_seeds=3, hard_share=0.0, hard_top=1))
    d = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
    d[labels[:, None] == labels[None, :]] = np.inf
    nearest_other = d.argmin(axis=1)
    # Larger batches use the image budget sooner; the batches both have share the same seeds.
    assert 0 < len(with_hard) < len(without)
    added = 0
    for a, b in zip(with_hard, without):
        assert set(b.tolist()) <= set(a.tolist())
        extra = np.setdiff1d(a, b)
        assert set(extra.tolist()) <= set(nearest_other[b].tolist())
        added += extra.size
    assert added > 0


def test_lists_are_a_pure_function_of_seed_and_epoch():
    labels, emb = clustered()
    a = batched_table(labels, emb, epoch=2, seed=0)
    pd.testing.assert_frame_equal(a, batched_table(labels, emb, epoch=2, seed=0))
    assert not a.equals(batched_table(labels, emb, epoch=3, seed=0))


def test_bad_batch_settings_name_the_setting():
    with pytest.raises(ConfigError, match="batch_classes"):
        get_strategy("batched", batch_classes=1)
    with pytest.raises(ConfigError, match="triplet_rule"):
        get_strategy("batched", triplet_rule="easy")


class CountingNet(torch.nn.Module):
    """Wraps a model and records how many images each forward call received."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.sizes: list[int] = []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        return self.inner(x)


def _steps(df: pd.DataFrame):
    return batch_steps(df["batch"].to_numpy(), df[["query", "positive", "negative"]].to_numpy(),
                       df["query_label"].to_numpy(), df["negative_label"].to_numpy())


def test_each_distinct_image_is_forwarded_once_per_batch(fashion):
    store, train = fashion
    sub = train.groupby("label").head(12)
    labels = sub["label"].to_numpy()
    ctx = SamplingContext(classes=ClassMembers.from_labels(labels), epoch=1, seed=0)
    df = sample_triplets(ctx, get_strategy("batched", batch_classes=4, batch_seeds=3, image_passes=1),
                         sub["image_id"].to_numpy()).to_pandas()
    torch.manual_seed(0)
    net = CountingNet(build_model(SMALL))
    settings = TrainSettings(lr=0.01)
    log = train_one_epoch(net, make_optimizer(net, settings), _steps(df), store, settings, epoch=1, seed=0,
                          device=CPU, show_bar=False, loss=LossSettings(reduce="mean", in_batch="listed"))
    distinct = df.groupby("batch").apply(
        lambda r: np.unique(r[["query", "positive", "negative"]].to_numpy()).size, include_groups=False)
    assert net.sizes == distinct.tolist()  # one forward per batch, each distinct image once
    assert log["images"].tolist() == distinct.tolist()
    assert log["triplets"].tolist() == df.groupby("batch").size().tolist()
    assert sum(net.sizes) < 3 * len(df)  # triplets share forwards


def test_loss_equals_brute_force_over_the_listed_triplets():
    torch.manual_seed(0)
    z = torch.randn(12, 5)
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(40):
        a = int(rng.integers(12))
        p = int(rng.choice([i for i in range(12) if labels[i] == labels[a] and i != a]))
        n = int(rng.choice(np.flatnonzero(labels != labels[a])))
        rows.append((a, p, n))
    ids = np.array(rows) + 500
    (step,) = batch_steps(np.zeros(len(rows), int), ids, labels[np.array(rows)[:, 0]], labels[np.array(rows)[:, 2]])
    from pipeline.training.losses import listed_triplet_losses

    local = [torch.from_numpy(a) for a in (step.anchors, step.positives, step.negatives)]
    zz = z[torch.from_numpy(step.images - 500)]  # the step's images in its own order
    losses, _, _ = listed_triplet_losses(zz, *local, margin=MARGIN)
    brute = [max(0.0, MARGIN + float((z[a] - z[p]).norm()) - float((z[a] - z[n]).norm())) for a, p, n in rows]
    np.testing.assert_allclose(losses.numpy(), brute, rtol=1e-5, atol=1e-6)
    assert float(reduce_losses(losses, "mean")) == pytest.approx(np.mean(brute), rel=1e-5)
    active = [b for b in brute if b > 0]
    assert float(reduce_losses(losses, "active")) == pytest.approx(np.mean(active), rel=1e-5)


def test_all_in_batch_losses_equal_brute_force():
    torch.manual_seed(1)
    z = torch.randn(9, 4)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3])
    losses, _, _ = all_triplet_losses(z, labels, margin=MARGIN)
    brute = [max(0.0, MARGIN + float((z[a] - z[p]).norm()) - float((z[a] - z[n]).norm()))
             for a in range(9) for p in range(9) for n in range(9)
             if a != p and labels[a] == labels[p] and labels[n] != labels[a]]
    np.testing.assert_allclose(np.sort(losses.numpy()), np.sort(brute), rtol=1e-5, atol=1e-6)


def test_uniform_course_lists_are_unchanged():
    """The course protocol's list for a fixed seed, pinned by digest: batch lists left it as it was."""
    labels = np.repeat(np.arange(7), 23)
    ctx = SamplingContext(classes=ClassMembers.from_labels(labels), epoch=4, seed=11)
    table = sample_triplets(ctx, get_strategy("uniform"), np.arange(labels.size) * 3,
                            ListSettings(triplets_per_query=1, n_blocks=3, dask_scheduler="synchronous"))
    assert "batch" not in table.column_names
    digest = hashlib.sha256(np.stack([table[c].to_numpy() for c in ("query", "positive", "negative")]).tobytes())
    assert digest.hexdigest() == UNIFORM_DIGEST


# Computed with the code before batch-structured lists existed (commit dbd59a9).
UNIFORM_DIGEST = "e72d80c128ed59960ed8fc9e4f40a11d757bb5ea2cf245ce9bbfdb28cad88d9d"


def test_unmined_batched_list_is_pinned():
    """Both batched streams (composition, then listed triplets), pinned without embeddings: integer
    draws only, so the digest holds on any machine."""
    labels = np.repeat(np.arange(7), [23, 9, 15, 2, 30, 11, 17])
    ctx = SamplingContext(classes=ClassMembers.from_labels(labels), epoch=4, seed=11)
    strategy = get_strategy("batched", batch_classes=3, batch_seeds=4, image_passes=2, triplets_per_anchor=5)
    table = sample_triplets(ctx, strategy, np.arange(labels.size) * 3)
    batch = table["batch"].to_numpy()
    sizes = [m.size for m in compose_batches(ctx, strategy)]
    assert np.array_equal(np.unique(batch), np.arange(len(sizes)))
    # Every image of a batch has an in-batch positive (2+ seeds per class), so it anchors 5 rows.
    assert np.bincount(batch).tolist() == [5 * size for size in sizes]
    assert sum(sizes) >= 2 * labels.size > sum(sizes[:-1])  # image_passes x the training images
    columns = np.stack([table[c].to_numpy().astype(np.int64) for c in ("batch", "query", "positive", "negative")])
    assert hashlib.sha256(columns.tobytes()).hexdigest() == BATCHED_DIGEST


# Computed with the code before the sampling package was split (commit c128798).
BATCHED_DIGEST = "8c4edf65fcb34c4a84ae0faccc8d143a43579be66d2affa049686f9c0e1c4731"


def test_batched_run_and_inspect_from_the_command_line(tmp_path, tiny_imagenet):
    """RunAll with batch-structured lists trained on all in-batch triplets; inspect shows the batches."""
    import subprocess
    import sys

    from tests.support import REPO, fast_config, luigi_cli, write_overrides

    cfg = fast_config(tmp_path, tiny_imagenet, shipped_lists=True)
    cfg["TripletList"].update(strategy="batched", batch_classes=3, batch_seeds=4, image_passes=2)
    cfg.setdefault("loss", {}).update(reduce="active", in_batch="all")
    config = write_overrides(tmp_path, cfg)
    done = luigi_cli(["RunAll"], config)
    assert done.code == 0, done.output[-4000:]
    report = (tmp_path / "artifacts" / "test" / "report" / "epochs-002" / "summary.md").read_text()
    assert "## Training by epoch" in report
    listing = pd.read_parquet(tmp_path / "artifacts" / "test" / "triplets" / "epoch-002")
    assert {"batch", "query", "positive", "negative"} <= set(listing.columns)
    out = subprocess.run([sys.executable, "-m", "pipeline.show", "triplets", "--artifacts",
                          str(tmp_path / "artifacts"), "--experiment", "test", "--epoch", "2", "--dataset",
                          "tiny-imagenet-16px"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"batches: {listing['batch'].nunique()}" in out.stdout
    assert "triplets per image forwarded" in out.stdout
