"""The ranking loss of the course protocol: max(0, g + D(q,p) - D(q,n)), and its settings."""

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


def listed_triplet_losses(
    z: torch.Tensor, anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, *,
    margin: float = 1.0, squared: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The hinge of every listed triplet, as rows of ``z``; see :func:`triplet_loss`."""
    return triplet_loss(z[anchors], z[positives], z[negatives], margin=margin, squared=squared)


def all_triplet_losses(
    z: torch.Tensor, labels: torch.Tensor, *, margin: float = 1.0, squared: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The hinge of every in-batch triplet (anchor, same-label positive, other-label negative).

    Returns flat per-triplet losses, the anchor-positive distance of each
    (anchor, positive) pair and every anchor-negative distance. Memory is
    (anchor-positive pairs) x (batch), not batch cubed.
    """
    sq = (z * z).sum(dim=1)
    d = (sq[:, None] + sq[None, :] - 2.0 * z @ z.T).clamp_min(1e-12)
    if not squared:
        d = d.sqrt()
    same = labels[:, None] == labels[None, :]
    same.fill_diagonal_(False)
    a, p = same.nonzero(as_tuple=True)
    negative = labels[a][:, None] != labels[None, :]
    d_ap = d[a, p]
    losses = torch.relu(margin + d_ap[:, None] - d[a])[negative]
    return losses, d_ap, d[a][negative]


def reduce_losses(losses: torch.Tensor, how: str) -> torch.Tensor:
    """``mean`` over all triplets (the course), or ``active``: over those with a positive hinge
    (pytorch-metric-learning's AvgNonZeroReducer), so easy triplets do not dilute the gradient."""
    if how == "active":
        return losses.sum() / (losses > 0).sum().clamp_min(1)
    return losses.mean()
