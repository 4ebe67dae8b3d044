"""How one training step is split across the ranks, and put back together.

Every rank draws the whole step's augmentations (from the step's own generator,
:func:`pipeline.training.loop.step_generator`) and keeps a contiguous slice of
the images, slice ``r`` for rank ``r``; it forwards only that slice. The slices'
embeddings are then all-gathered with the autograd-aware
``torch.distributed.nn.functional.all_gather``, so every rank holds the whole
step's embeddings and computes the whole step's loss exactly as one process does
(in-batch ``all`` triplets need every embedding of the batch).

Gradients: the all-gather's backward sums, over the ranks, the gradient each
rank's copy of the loss sends to a slice, so rank ``r``'s parameter gradient is
N times its slice's share of the one-process gradient; DistributedDataParallel
averages over the N ranks, which leaves the sum of the shares: the one-process
gradient. Steps, loss and learning rate are therefore those of one process.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

# torch 2.14 deprecates torch.distributed.nn.functional in favour of the private
# _functional_collectives; its autograd all_gather and all_reduce still work on
# gloo and NCCL, so the per-call warning is silenced rather than repeated each step.
warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.", category=FutureWarning)


def slice_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous share of ``n`` items: sizes differ by at most one, the larger first."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


@dataclass(frozen=True)
class BatchShard:
    """Rank ``rank`` of ``world`` in the collective ``group`` (None = the default group)."""

    rank: int
    world: int
    group: Any = None

    def local(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a step's (augmented) images."""
        lo, hi = slice_bounds(batch.shape[0], self.rank, self.world)
        return batch[lo:hi]

    def gather(self, z_local: torch.Tensor, n: int) -> torch.Tensor:
        """The whole step's ``(n, d)`` embeddings from every rank's slice, differentiable.

        Slices are zero-padded to equal length for the collective, then trimmed;
        the padding rows never reach the loss, so they get no gradient.
        """
        from torch.distributed.nn.functional import all_gather

        size = slice_bounds(n, 0, self.world)[1]
        padded = F.pad(z_local, (0, 0, 0, size - z_local.shape[0]))
        parts = all_gather(padded, group=self.group)
        return torch.cat([part[: hi - lo] for part, (lo, hi) in
                          zip(parts, (slice_bounds(n, r, self.world) for r in range(self.world)))])
