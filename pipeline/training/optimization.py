"""Optimiser settings and the optimiser and learning-rate schedule built from them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.errors import ConfigError
from pipeline.settings import check, setting

SECTION = "TrainEpoch"


@dataclass(frozen=True)
class TrainSettings:
    """How an epoch optimises (``[TrainEpoch]``; the course protocol is ``configs/tiny-imagenet.cfg``).

    The loss itself is :class:`pipeline.training.losses.LossSettings` (``[loss]``).
    """

    batch_size: int = setting(64, "triplets (plain lists) per step; batched lists bring their own batches",
                              minimum=1)
    optimizer: str = setting("sgd", "sgd (with momentum, the course) or adam", choices=("sgd", "adam"))
    lr: float = setting(0.01, "learning rate")
    momentum: float = setting(0.9, "SGD momentum")
    weight_decay: float = setting(1e-4, "L2 weight decay", minimum=0.0)
    lr_step: int = setting(9, "decay lr every N epochs (0 = never)", minimum=0)
    lr_gamma: float = setting(0.2, "lr factor at each decay")

    def check(self) -> None:
        """Raise :class:`~pipeline.errors.ConfigError` naming the first invalid setting."""
        check(self, SECTION)
        if not self.lr > 0:
            raise ConfigError(f"[{SECTION}] lr = {self.lr}; it must be positive")


def make_optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    """SGD with momentum (course default) or Adam."""
    if s.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)


def make_lr_scheduler(optimizer: torch.optim.Optimizer, s: TrainSettings) -> torch.optim.lr_scheduler.LRScheduler:
    """Step decay every ``lr_step`` epochs (stepped once per epoch); 0 keeps lr constant."""
    step = s.lr_step if s.lr_step > 0 else 10**9
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=s.lr_gamma)
