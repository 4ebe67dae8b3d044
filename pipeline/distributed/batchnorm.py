"""Batch norm over the whole step when its images are split across ranks.

With the step's images split (:mod:`pipeline.distributed.split`), a plain
BatchNorm would normalise each slice by its own statistics; synchronised batch
norm uses the statistics of every image of the step, as one process does. On
CUDA that is ``torch.nn.SyncBatchNorm``; it refuses CPU tensors, so gloo ranks
use :class:`GroupBatchNorm2d`, written with the autograd-aware collectives of
``torch.distributed.nn.functional`` (whose backward sums across ranks, matching
the gradient scaling of :mod:`pipeline.distributed.split`).

Both keep BatchNorm2d's parameters and buffers under the same names, so the
state dict, and hence every checkpoint, has exactly the one-process layout.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import pipeline.distributed.split  # noqa: F401  (silences torch's deprecation warning of the collectives)


class GroupBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover all ranks of ``group``.

    Two-pass, like BatchNorm itself: the global mean (sums and counts all-reduced),
    then the global variance of the centred values; sums accumulate in float64 so
    that the order of the ranks barely shows. Running statistics are updated as
    BatchNorm2d does: momentum (or the cumulative average when it is None) and the
    unbiased variance over the global count. Evaluation uses the running statistics.
    """

    group: Any = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        self._check_input_dim(x)
        c = x.shape[1]
        dims = (0, 2, 3)
        count = torch.tensor([x.numel() / c], dtype=torch.float64, device=x.device)
        totals = all_reduce(torch.cat([x.sum(dims, dtype=torch.float64), count]), group=self.group)
        n = float(totals[-1].detach())
        if n <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got {n:.0f} over all ranks")
        mean = totals[:c] / n
        centred = x - mean.to(x.dtype).view(1, c, 1, 1)
        var = all_reduce(centred.square().sum(dims, dtype=torch.float64), group=self.group) / n
        self._update_running_stats(mean.detach(), var.detach(), n)
        scale = torch.rsqrt(var + self.eps).to(x.dtype)
        if self.affine:
            return centred * (scale * self.weight).view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return centred * scale.view(1, c, 1, 1)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, n: float) -> None:
        if not self.track_running_stats:
            return
        self.num_batches_tracked.add_(1)
        factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1 - factor).add_((var * (n / (n - 1))).to(self.running_var.dtype), alpha=factor)


def _convert_cpu(module: nn.Module, group: Any) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GroupBatchNorm2d):
        synced = GroupBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                  module.track_running_stats)
        # The same Parameter and buffer objects: optimizers and state dicts see no change.
        synced._parameters = module._parameters
        synced._buffers = module._buffers
        synced.training = module.training
        synced.group = group
        return synced
    for name, child in module.named_children():
        module.add_module(name, _convert_cpu(child, group))
    return module


def synchronise_batchnorm(net: nn.Module, device: torch.device, group: Any = None) -> nn.Module:
    """``net`` with every BatchNorm2d computing its statistics over all ranks of ``group``."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(net, process_group=group)
    return _convert_cpu(net, group)
