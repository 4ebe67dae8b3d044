"""The settings of a training epoch: ``[TrainEpoch]`` (optimiser, schedule, partial
saves; augmentation is :class:`~pipeline.data.settings.AugmentSettings`) and
``[loss]``, with their checks, and :class:`EpochSettings`, all that an epoch computes.

They live apart from the training code so that declaring a task's parameters
(``luigi --module tasks``) costs no import of torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from pipeline.data.settings import AugmentSettings
from pipeline.errors import ConfigError
from pipeline.network import ModelSettings
from pipeline.settings import check, setting

SECTION = "TrainEpoch"
REDUCTIONS = ("mean", "active")
IN_BATCH = ("listed", "all")


@dataclass(frozen=True)
class TrainSettings:
    """How an epoch optimises (``[TrainEpoch]``; the course protocol is ``configs/tiny-imagenet.cfg``).

    The loss itself is :class:`LossSettings` (``[loss]``).
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


@dataclass(frozen=True)
class LossSettings:
    """``[loss]``: the triplet loss, shared by training and by the mining that targets its margin."""

    margin: float = setting(1.0, "the gap g of max(0, g + D(q,p) - D(q,n))", minimum=0.0)
    squared: bool = setting(False, "squared instead of plain Euclidean distance")
    reduce: str = setting("active", "average over active triplets (those with a positive hinge) or over all (mean, the course)",
                          choices=REDUCTIONS)
    in_batch: str = setting("all", "batched lists: train on all in-batch triplets or on the listed ones only",
                            choices=IN_BATCH)

    def check(self) -> None:
        """Raise :class:`~pipeline.errors.ConfigError` naming the first invalid setting."""
        check(self, "loss")


@dataclass(frozen=True)
class PartialSaveSettings:
    """How often a training epoch saves its progress (run-only: results do not depend on it)."""

    checkpoint_minutes: float = setting(10.0, "save the epoch's progress this often (0 = never)", run_only=True,
                                        minimum=0.0)
    checkpoint_every: int = setting(0, "also save it every N steps (0 = only by time)", run_only=True, minimum=0)


@dataclass(frozen=True)
class EpochSettings:
    """Everything that decides what an epoch computes (``config`` is recorded in its checkpoint)."""

    model: ModelSettings
    train: TrainSettings
    loss: LossSettings
    augment: AugmentSettings
    config: Mapping[str, Any]

    def check(self) -> None:
        """Raise :class:`~pipeline.errors.ConfigError` naming the first invalid setting."""
        self.model.check()
        self.train.check()
        self.loss.check()
        self.augment.check()

