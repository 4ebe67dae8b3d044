"""Embedding collapse is detected, recorded in the step log and reported."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from pipeline.reporting.inputs import collapse_notes
from pipeline.training.loop import TrainSettings, train_one_epoch, warn_if_collapsed


class ConstantNet(torch.nn.Module):
    """Maps every image to the same point: the collapsed embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(len(x), -1) + 0 * x.mean()


def test_collapsed_training_is_flagged_in_the_step_log_and_warned(caplog):
    store = np.random.default_rng(0).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    triplets = np.array([[i, (i + 1) % 12, (i + 6) % 12] for i in range(12)])
    net = ConstantNet()
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    with caplog.at_level(logging.WARNING):
        log = train_one_epoch(net, opt, triplets, store, TrainSettings(batch_size=4), epoch=3, seed=0,
                              device=torch.device("cpu"), show_bar=False)
    assert log["collapsed"].all()
    assert np.allclose(log["loss"], 1.0)  # stuck at the margin
    assert "epoch 3: embedding collapse" in caplog.text
    assert collapse_notes(log) and "epoch 3" in collapse_notes(log)[0]


def test_healthy_training_is_not_flagged():
    log = pd.DataFrame({"epoch": 1, "step": range(20), "loss": 0.3, "active_fraction": 0.4, "lr": 0.01,
                        "seconds": 0.1, "mean_distance": 2.0, "collapsed": False})
    assert not warn_if_collapsed(log, 1)
    assert collapse_notes(log) == []
