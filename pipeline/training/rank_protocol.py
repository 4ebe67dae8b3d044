"""What training needs from a rank of a distributed epoch, as protocols.

Training knows nothing of torch.distributed's setup: :mod:`pipeline.distributed`
implements these (``BatchShard``, ``RankContext``) and hands them in, so the
dependency points from the distributed layer down to training, not back up.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn


class StepShard(Protocol):
    """How one step's images are split across the ranks and put back together."""

    def local(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a step's (augmented) images."""
        ...

    def gather(self, z_local: torch.Tensor, n: int) -> torch.Tensor:
        """The whole step's ``(n, d)`` embeddings from every rank's slice, differentiable."""
        ...


class EpochRank(Protocol):
    """One rank of a distributed epoch, as :func:`pipeline.training.epoch.train_epoch` uses it."""

    shard: StepShard

    @property
    def writes(self) -> bool:
        """Whether this rank writes checkpoints, step logs and partial checkpoints."""
        ...

    def wrap(self, net: nn.Module) -> nn.Module:
        """``net`` made data-parallel (``net`` itself stays the module to save)."""
        ...

    def check_same(self, value: object, what: str) -> None:
        """Raise unless every rank holds the same ``value``."""
        ...
