"""Real (short) training: the loss goes down, the step log is complete, and a
diverging run stops with an error that names where it happened, through the
pipeline function and through the TrainEpoch task."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Iterator

import luigi
import numpy as np
import pandas as pd
import pytest
import torch
from luigi.execution_summary import LuigiStatusCode

import tasks
from pipeline.checkpoint import load_checkpoint
from pipeline.errors import TrainingError
from pipeline.network import ModelSettings, build_model
from pipeline.sampling import ClassMembers, ListSettings, SamplingContext, get_strategy, sample_triplets
from pipeline.training.loop import STEP_LOG_COLUMNS, train_one_epoch
from pipeline.training.optimization import make_optimizer
from pipeline.training.settings import LossSettings, TrainSettings
from pipeline.data.settings import AugmentSettings
from tests.support import assert_succeeded, build, fast_config

CPU = torch.device("cpu")
SMALL = ModelSettings(width=8, embedding_dim=16, stem="small-s2")
COURSE_LOSS = LossSettings(reduce="mean", in_batch="listed")  # the course loss: its mean falls as training works


# --------------------------------------------------------------------------- helpers

def uniform_triplets(train: pd.DataFrame, epoch: int, per_class: int = 30, seed: int = 0) -> np.ndarray:
    """``(10 * per_class, 3)`` uniform triplets over the first ``per_class`` images of each class."""
    sub = train.groupby("label", sort=True).head(per_class).sort_values("image_id")
    ctx = SamplingContext(classes=ClassMembers.from_labels(sub["label"].to_numpy()), epoch=epoch, seed=seed)
    table = sample_triplets(ctx, get_strategy("uniform"), sub["image_id"].to_numpy(),
                            ListSettings(triplets_per_query=1, n_blocks=2, dask_scheduler="synchronous"))
    return np.stack([table[c].to_numpy() for c in ("query", "positive", "negative")], axis=1)


@contextlib.contextmanager
def failures_of(task_cls: type[luigi.Task]) -> Iterator[list[tuple[luigi.Task, BaseException]]]:
    """Collect (task, exception) of every failure of ``task_cls`` while inside."""
    seen: list[tuple[luigi.Task, BaseException]] = []

    def record(task, exc):
        seen.append((task, exc))

    task_cls.event_handler(luigi.Event.FAILURE)(record)
    try:
        yield seen
    finally:
        luigi.Task._event_callbacks[task_cls][luigi.Event.FAILURE].discard(record)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- pipeline level

def test_short_training_on_fashion_mnist_lowers_the_loss(fashion):
    store, train = fashion
    torch.manual_seed(0)
    net = build_model(SMALL)
    settings = TrainSettings(batch_size=32, lr=0.05)
    optimizer = make_optimizer(net, settings)
    logs = []
    for epoch in range(1, 5):
        triplets = uniform_triplets(train, epoch)
        assert triplets.shape == (300, 3)
        logs.append(train_one_epoch(net, optimizer, triplets, store, settings, epoch=epoch, seed=0, device=CPU,
                                    loss=COURSE_LOSS, show_bar=False))
    steps = pd.concat(logs, ignore_index=True)
    first, last = steps["loss"].iloc[:5].mean(), steps["loss"].iloc[-10:].mean()
    # Untrained, the hinge sits near the margin (1.0); a few passes must cut it at least in half.
    assert first > 0.6
    assert last < 0.5 * first, steps["loss"].round(3).tolist()
    assert steps["active_fraction"].iloc[-10:].mean() < steps["active_fraction"].iloc[:5].mean()


def test_step_log_has_the_documented_columns(fashion):
    store, train = fashion
    torch.manual_seed(1)
    net = build_model(SMALL)
    settings = TrainSettings(batch_size=64, lr=0.01)
    triplets = uniform_triplets(train, epoch=3, per_class=13)  # 130 triplets -> 3 steps, the last one short
    calls = []
    log = train_one_epoch(net, make_optimizer(net, settings), triplets, store, settings,
                          loss=LossSettings(margin=0.5), epoch=3, seed=0,
                          device=CPU, progress=lambda step, total, loss: calls.append((step, total, loss)),
                          show_bar=False)
    assert tuple(log.columns) == STEP_LOG_COLUMNS == (
        "epoch", "step", "loss", "active_fraction", "lr", "seconds", "mean_distance", "collapsed", "images",
        "triplets", "loss_all")
    assert len(log) == 3
    assert log["triplets"].tolist() == [64, 64, 2] and log["images"].tolist() == [192, 192, 6]
    assert log["epoch"].tolist() == [3, 3, 3]
    assert log["step"].tolist() == [0, 1, 2]
    assert (log["lr"] == 0.01).all()
    assert np.isfinite(log["loss"]).all() and (log["loss"] >= 0).all()
    assert log["active_fraction"].between(0, 1).all()
    # reduce = active averages the active triplets; loss_all every triplet of the step.
    assert log["loss_all"].to_numpy() == pytest.approx((log["loss"] * log["active_fraction"]).to_numpy(), rel=1e-5)
    assert (log["seconds"] > 0).all()
    assert (log["mean_distance"] > 0).all()
    assert log["collapsed"].dtype == bool and not log["collapsed"].any()
    assert [c[:2] for c in calls] == [(1, 3), (2, 3), (3, 3)]
    assert [c[2]["loss"] for c in calls] == pytest.approx(log["loss"].tolist())
    assert pd.DataFrame([c[2] for c in calls]).equals(log)  # each call carries its step's row of the log


def test_training_is_reproducible_from_seed_and_epoch(fashion):
    """Same initial weights, triplets, seed and epoch -> bit-identical weights (augmentation included)."""
    store, train = fashion
    triplets = uniform_triplets(train, epoch=2, per_class=6)
    results = []
    for _ in range(2):
        torch.manual_seed(5)
        net = build_model(SMALL)
        settings = TrainSettings(batch_size=16, lr=0.02)
        train_one_epoch(net, make_optimizer(net, settings), triplets, store, settings, epoch=2, seed=9,
                        device=CPU, augment_settings=AugmentSettings(crop_padding=2, flip=True), show_bar=False)
        results.append(net.state_dict())
    for key, value in results[0].items():
        assert torch.equal(value, results[1][key]), key


def test_non_finite_loss_raises_training_error_naming_epoch_and_step(fashion):
    store, train = fashion
    torch.manual_seed(0)
    net = build_model(SMALL)
    settings = TrainSettings(batch_size=32, lr=1e20)
    with pytest.raises(TrainingError, match=r"epoch 7 step [1-9]\d*\b.*not finite"):
        train_one_epoch(net, make_optimizer(net, settings), uniform_triplets(train, epoch=7), store, settings,
                        epoch=7, seed=0, device=CPU, show_bar=False)


def test_non_finite_weights_fail_at_the_first_step(fashion):
    store, train = fashion
    torch.manual_seed(0)
    net = build_model(SMALL)
    with torch.no_grad():
        net.head.weight[0, 0] = float("inf")
    settings = TrainSettings(batch_size=32, lr=0.01)
    with pytest.raises(TrainingError, match=r"epoch 4 step 0:"):
        train_one_epoch(net, make_optimizer(net, settings), uniform_triplets(train, epoch=4), store, settings,
                        epoch=4, seed=0, device=CPU, show_bar=False)


# --------------------------------------------------------------------------- task level

def test_diverging_epoch_fails_and_leaves_the_previous_checkpoint_intact(configure, tmp_path, tiny_imagenet):
    cfg = fast_config(tmp_path, tiny_imagenet)
    # Epoch 1 trains at lr 0.01; the step decay then multiplies it by 1e22, so epoch 2 runs at lr 1e20.
    cfg["TrainEpoch"] = {**cfg["TrainEpoch"], "lr_step": 1, "lr_gamma": 1e22}
    configure(cfg)
    train = tmp_path / "artifacts" / "test" / "train"

    result = build([tasks.TrainEpoch(epoch=1)])
    assert_succeeded(result)
    ckpt1 = train / "epoch-001" / "_checkpoint.pt"
    before = digest(ckpt1)

    with failures_of(tasks.TrainEpoch) as failures:
        result = build([tasks.TrainEpoch(epoch=2)])
    assert result.status == LuigiStatusCode.FAILED, result.summary_text
    assert [t.epoch for t, _ in failures] == [2]
    exc = failures[0][1]
    assert isinstance(exc, TrainingError)
    assert "epoch 2 step" in str(exc) and "not finite" in str(exc)

    assert not (train / "epoch-002").exists()
    assert sorted(p.name for p in train.iterdir() if not p.name.startswith(".")) == ["epoch-000", "epoch-001"]
    assert not list(train.glob(".partial-*")) and not list(train.glob(".tmp-*"))
    assert digest(ckpt1) == before
    state = load_checkpoint(ckpt1)
    assert state["epoch"] == 1
    net = build_model(ModelSettings(arch="resnet18", width=8, embedding_dim=8, stem="small-s2"))
    net.load_state_dict(state["model"])
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    steps = pd.read_parquet(train / "epoch-001" / "steps.parquet")
    assert tuple(steps.columns) == STEP_LOG_COLUMNS and len(steps) == 5  # 36 triplets / batch 8
    assert not tasks.TrainEpoch(epoch=2).complete()


def test_changing_lr_inside_an_experiment_is_refused_and_keeps_epoch_1(configure, tmp_path, tiny_imagenet, caplog):
    """`--TrainEpoch-lr 1e20` on an experiment trained at 0.01: refused before anything runs, epoch 1 untouched."""
    cfg = fast_config(tmp_path, tiny_imagenet)
    configure(cfg)
    result = build([tasks.TrainEpoch(epoch=1)])
    assert_succeeded(result)
    train = tmp_path / "artifacts" / "test" / "train"
    before = digest(train / "epoch-001" / "_checkpoint.pt")

    cfg["TrainEpoch"] = {**cfg["TrainEpoch"], "lr": 1e20}
    for target in (2, 1):  # a new epoch, and one that is already complete
        configure(cfg)
        caplog.clear()
        with failures_of(tasks.TrainEpoch) as failures:
            result = build([tasks.TrainEpoch(epoch=target)])
        assert result.status == LuigiStatusCode.SCHEDULING_FAILED, result.summary_text
        assert failures == []  # nothing ran
        assert "lr: was 0.01, now 1e+20" in caplog.text
        assert "Use a new experiment name" in caplog.text
    assert not (train / "epoch-002").exists()
    assert digest(train / "epoch-001" / "_checkpoint.pt") == before
    assert load_checkpoint(train / "epoch-001" / "_checkpoint.pt")["epoch"] == 1


def test_lr_decays_by_epoch_through_the_checkpoints(configure, tmp_path, tiny_imagenet):
    cfg = fast_config(tmp_path, tiny_imagenet)
    cfg["TrainEpoch"] = {**cfg["TrainEpoch"], "lr": 0.04, "lr_step": 1, "lr_gamma": 0.5}
    configure(cfg)
    result = build([tasks.TrainEpoch(epoch=2)])
    assert_succeeded(result)
    train = tmp_path / "artifacts" / "test" / "train"
    for epoch, lr in ((1, 0.04), (2, 0.02)):
        steps = pd.read_parquet(train / f"epoch-{epoch:03d}" / "steps.parquet")
        assert steps["lr"].tolist() == pytest.approx([lr] * 5), epoch
        assert steps["epoch"].unique().tolist() == [epoch]
    state = load_checkpoint(train / "epoch-002" / "_checkpoint.pt")
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.01)  # what epoch 3 will use
    assert state["epoch"] == 2
