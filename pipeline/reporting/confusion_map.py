"""The class-confusion heatmap: for each validation class (row), the share of its
queries' k nearest training images that belong to each class (column).

The diagonal is the class's precision@k; a dark cell off it marks two classes
the embedding takes for one another. Shares are drawn on a square-root colour
scale, so a 5 % confusion is visible next to a 90 % diagonal.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.colors import PowerNorm

from pipeline.reporting.figure_canvas import new_figure, no_data, save
from pipeline.reporting.image_grids import short_label

__all__ = ["CONFUSION_CMAP", "LABEL_EVERY_TICK", "confusion_figsize", "plot_confusion"]

CONFUSION_CMAP = "Blues"
# Up to this many classes every row and column is named; beyond, about this many ticks are.
LABEL_EVERY_TICK = 40
# Up to this many classes each cell also prints its share.
_ANNOTATE = 12


def confusion_figsize(n: int) -> tuple[float, float]:
    """Width and height in inches for ``n`` classes: room for the names (or the
    sampled ticks) left and below, and the colour bar right."""
    side = min(max(0.35 * n, 4.5), 10.0)
    return side + 2.6, side + 2.2


def _ticks(n: int) -> np.ndarray:
    """Positions to label: all of them for a few classes, an evenly spaced sample for many."""
    if n <= LABEL_EVERY_TICK:
        return np.arange(n)
    return np.arange(0, n, math.ceil(n / 20))


def plot_confusion(shares: np.ndarray, class_names: Sequence[str], out: Path, title: str) -> Path:
    """Draw ``shares`` (``(C, C)``, rows = query class, columns = neighbour class,
    rows summing to 1; NaN for a class without queries) with ``class_names`` on
    both axes. Returns ``out``."""
    shares = np.asarray(shares, dtype=float)
    n = len(class_names)
    if shares.shape != (n, n):
        raise ValueError(f"expected a {n}x{n} matrix of shares for {n} class names, got {shares.shape}")
    fig = new_figure(*confusion_figsize(n))
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11)
    if n == 0:
        no_data(ax, "no validation queries")
        return save(fig, out)
    image = ax.imshow(shares, cmap=CONFUSION_CMAP, norm=PowerNorm(0.5, vmin=0.0, vmax=1.0),
                      interpolation="nearest", aspect="equal")
    ticks = _ticks(n)
    size = 8 if n <= 20 else 6
    names = [short_label(class_names[i]) for i in ticks]
    ax.set_xticks(ticks, names, rotation=90, fontsize=size)
    ax.set_yticks(ticks, names, fontsize=size)
    every = "" if len(ticks) == n else f" (every {ticks[1] - ticks[0]}th named)"
    ax.set_xlabel(f"neighbour class (training){every}")
    ax.set_ylabel(f"query class (validation){every}")
    if n <= _ANNOTATE:
        for (row, col), value in np.ndenumerate(shares):
            if np.isfinite(value) and value >= 0.005:  # printing "0.00" everywhere would hide the errors
                ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value > 0.4 else "black")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the row's neighbours")
    return save(fig, out)
