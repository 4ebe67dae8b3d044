"""The ranking loss of the course protocol: max(0, g + D(q,p) - D(q,n))."""

from __future__ import annotations

import torch


def pairwise_distance(a: torch.Tensor, b: torch.Tensor, *, squared: bool = False) -> torch.Tensor:
    """Row-wise Euclidean distance; the clamp keeps the gradient finite at zero."""
    sq = (a - b).pow(2).sum(dim=1)
    return sq if squared else sq.clamp_min(1e-12).sqrt()


def triplet_loss(
    q: torch.Tensor, p: torch.Tensor, n: torch.Tensor, *, margin: float = 1.0, squared: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-triplet hinge loss and the two distances, all shaped ``(B,)``."""
    d_qp = pairwise_distance(q, p, squared=squared)
    d_qn = pairwise_distance(q, n, squared=squared)
    return torch.relu(margin + d_qp - d_qn), d_qp, d_qn
