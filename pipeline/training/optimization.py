"""Optimiser settings and the optimiser and learning-rate schedule built from them."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.training.settings import TrainSettings


def make_optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    """SGD with momentum (course default) or Adam."""
    if s.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)


def make_lr_scheduler(optimizer: torch.optim.Optimizer, s: TrainSettings) -> torch.optim.lr_scheduler.LRScheduler:
    """Step decay every ``lr_step`` epochs (stepped once per epoch); 0 keeps lr constant."""
    step = s.lr_step if s.lr_step > 0 else 10**9
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=s.lr_gamma)
