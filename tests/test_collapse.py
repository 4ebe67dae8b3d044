"""Embedding collapse is detected, recorded in the step log and reported.

Every step log here comes from a real (if tiny) training epoch, so the
``collapsed`` column is computed from the embedding distances the network
produced, never written by hand.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from pipeline.reporting.inputs import collapse_notes
from pipeline.training.loop import COLLAPSE_TOLERANCE, train_one_epoch, warn_if_collapsed
from pipeline.training.settings import LossSettings, TrainSettings

WARNING = "embedding collapse"


class ConstantNet(torch.nn.Module):
    """Maps every image to the same point: the collapsed embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(len(x), -1) + 0 * x.mean()


class LinearNet(torch.nn.Module):
    """A fixed random projection of the pixels: distinct images land at distinct points."""

    def __init__(self) -> None:
        super().__init__()
        weight = np.random.default_rng(1).standard_normal((4, 8 * 8 * 3)).astype(np.float32)
        self.weight = torch.nn.Parameter(torch.from_numpy(weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T


def _epoch(net: torch.nn.Module, epoch: int, margin: float = 1.0) -> pd.DataFrame:
    """One epoch (3 steps of 4 triplets) over 12 random 8x8 images; lr 0 keeps the embedding fixed."""
    store = np.random.default_rng(0).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    triplets = np.array([[i, (i + 1) % 12, (i + 6) % 12] for i in range(12)])
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    return train_one_epoch(net, opt, triplets, store, TrainSettings(batch_size=4), loss=LossSettings(margin=margin),
                           epoch=epoch, seed=0, device=torch.device("cpu"), show_bar=False)


def test_collapsed_training_is_flagged_in_the_step_log_and_warned(caplog):
    with caplog.at_level(logging.WARNING):
        log = _epoch(ConstantNet(), epoch=3)
    assert (log["mean_distance"] < 1e-5).all()  # 0 up to the distance's clamp (sqrt of 1e-12)
    assert log["collapsed"].all()
    assert np.allclose(log["loss"], 1.0)  # stuck at the margin
    assert f"epoch 3: {WARNING}" in caplog.text
    notes = collapse_notes(log)
    assert len(notes) == 1 and notes[0].startswith(f"epoch 3: {WARNING}")


def test_healthy_training_is_not_flagged_or_warned(caplog):
    with caplog.at_level(logging.WARNING):
        log = _epoch(LinearNet(), epoch=1)
    # Far above the threshold (COLLAPSE_TOLERANCE x margin 1): the embedding is spread out.
    assert (log["mean_distance"] > 100 * COLLAPSE_TOLERANCE).all()
    assert not log["collapsed"].any()
    assert WARNING not in caplog.text
    assert not warn_if_collapsed(log, 1)
    assert collapse_notes(log) == []


def test_the_flag_compares_the_measured_distance_with_tolerance_times_margin(caplog):
    measured = _epoch(LinearNet(), epoch=1)["mean_distance"]
    # The same embedding (lr 0, same seed, same augmentation) judged against margins that put
    # the collapse threshold just above, then just below, every measured step distance.
    above = 1.01 * measured.max() / COLLAPSE_TOLERANCE
    below = 0.99 * measured.min() / COLLAPSE_TOLERANCE
    with caplog.at_level(logging.WARNING):
        flagged = _epoch(LinearNet(), epoch=1, margin=above)
    np.testing.assert_array_equal(flagged["mean_distance"], measured)
    assert flagged["collapsed"].all()
    assert f"epoch 1: {WARNING}" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        spared = _epoch(LinearNet(), epoch=1, margin=below)
    np.testing.assert_array_equal(spared["mean_distance"], measured)
    assert not spared["collapsed"].any()
    assert WARNING not in caplog.text


def test_only_the_end_of_an_epoch_decides_and_each_epoch_is_judged_alone():
    collapsed = _epoch(ConstantNet(), epoch=2)
    healthy = _epoch(LinearNet(), epoch=2)
    # One epoch that collapsed and then recovered, and one that ended collapsed.
    recovered = pd.concat([collapsed, healthy], ignore_index=True)
    ended_collapsed = pd.concat([healthy, collapsed], ignore_index=True)
    assert not warn_if_collapsed(recovered, 2)
    assert collapse_notes(recovered) == []
    assert warn_if_collapsed(ended_collapsed, 2)
    assert len(collapse_notes(ended_collapsed)) == 1
    # Several epochs in one step log: a note for the collapsed epoch only.
    steps = pd.concat([_epoch(LinearNet(), epoch=1), _epoch(ConstantNet(), epoch=2), _epoch(LinearNet(), epoch=3)],
                      ignore_index=True)
    notes = collapse_notes(steps)
    assert len(notes) == 1 and notes[0].startswith(f"epoch 2: {WARNING}")
