"""Image-grid figures: validation queries beside their nearest (or farthest)
training images, framed by whether each shares the query's class."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.gridspec import GridSpec

from pipeline.reporting.figure_canvas import new_figure, no_data, save

__all__ = ["OTHER_CLASS_COLOR", "QUERY_FRAME_COLOR", "SAME_CLASS_COLOR", "plot_neighbor_grid", "short_label"]

SAME_CLASS_COLOR = "#1a9850"
OTHER_CLASS_COLOR = "#d73027"
QUERY_FRAME_COLOR = "#111111"
# Longer class names (Tiny ImageNet words such as "Egyptian cat, ...") would
# spill into the neighbouring cell at the grid's cell width.
MAX_LABEL_CHARS = 18


def short_label(name: str, limit: int = MAX_LABEL_CHARS) -> str:
    """``name`` cut to ``limit`` characters with an ellipsis, to fit a figure's cell or tick."""
    name = str(name)
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _fmt_distance(d: float) -> str:
    if not np.isfinite(d):
        return "d=n/a"
    return f"d={d:.2f}" if abs(d) < 100 else f"d={d:.3g}"


def _show(ax: Axes, image: np.ndarray, color: str, width: float) -> None:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    # Upscaling a 28x28 or 64x64 image with smoothing blurs exactly the fine
    # detail a reader is meant to compare; nearest keeps the pixels honest.
    interpolation = "nearest" if max(image.shape[:2]) <= 128 else "antialiased"
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255,
              interpolation=interpolation)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(width)


def _check_shapes(query_images: np.ndarray, query_names: list[str], neighbor_images: np.ndarray,
                  neighbor_names: list[list[str]], distances: np.ndarray | None,
                  query_notes: Sequence[str] | None) -> int:
    """Raise ``ValueError`` unless the inputs describe the same Q queries x K neighbours; return K."""
    q = len(query_names)
    notes = q if query_notes is None else len(query_notes)
    if query_images.shape[0] != q or neighbor_images.shape[0] != q or len(neighbor_names) != q or notes != q:
        raise ValueError(
            f"query count mismatch: {query_images.shape[0]} query images, {q} query names, "
            f"{neighbor_images.shape[0]} neighbour rows, {len(neighbor_names)} name rows, {notes} notes")
    k = neighbor_images.shape[1] if neighbor_images.ndim >= 2 else 0
    bad_distances = distances is not None and distances.shape != (q, k)
    if bad_distances or any(len(row) != k for row in neighbor_names):
        raise ValueError(
            f"expected {q}x{k} neighbour names and distances, got distances "
            f"{None if distances is None else distances.shape} and name rows of lengths "
            f"{[len(r) for r in neighbor_names]}")
    return k


def plot_neighbor_grid(query_images: np.ndarray, query_names: list[str],
                       neighbor_images: np.ndarray, neighbor_names: list[list[str]],
                       distances: np.ndarray | None, out: Path, title: str,
                       query_notes: Sequence[str] | None = None) -> Path:
    """One row per query: the query, then its K nearest neighbours.

    Neighbours of the query's class are framed green, others red; each is
    labelled with its class and distance (class only when ``distances`` is
    None). Each query is titled with its class and ``query_notes[i]``, by
    default how many of the K share its class. Images are uint8 ``(Q, H, W, 3)``
    (queries) and ``(Q, K, H, W, 3)`` (neighbours); a single grey channel
    (``(..., H, W)`` or ``(..., H, W, 1)``) is accepted too. Returns ``out``.
    """
    query_images = np.asarray(query_images)
    neighbor_images = np.asarray(neighbor_images)
    distances = None if distances is None else np.asarray(distances, dtype=float)
    k = _check_shapes(query_images, query_names, neighbor_images, neighbor_names, distances, query_notes)
    q = len(query_names)

    cell = 1.45
    # A thin empty column sets the query apart from its neighbours.
    width_ratios = [1.0, 0.12] + [1.0] * k
    fig = new_figure(cell * (sum(width_ratios)) + 0.3, (cell + 0.45) * max(q, 1) + 0.7)
    fig.suptitle(f"{title}\ngreen frame: same class as query · red frame: other class",
                 fontsize=11)
    if q == 0:
        no_data(fig.add_subplot(), "no queries")
        return save(fig, out)
    grid = GridSpec(q, k + 2, figure=fig, width_ratios=width_ratios)
    for i in range(q):
        query_class = str(query_names[i])
        matches = sum(str(n) == query_class for n in neighbor_names[i])
        note = f"{matches}/{k} same class" if query_notes is None else str(query_notes[i])
        ax = fig.add_subplot(grid[i, 0])
        _show(ax, query_images[i], QUERY_FRAME_COLOR, 4.0)
        # "query: " eats into the ~22 bold characters that fit across a cell.
        ax.set_title(f"query: {short_label(query_class, 15)}\n{note}", fontsize=8, fontweight="bold")
        for j in range(k):
            name = str(neighbor_names[i][j])
            color = SAME_CLASS_COLOR if name == query_class else OTHER_CLASS_COLOR
            ax = fig.add_subplot(grid[i, j + 2])
            _show(ax, neighbor_images[i, j], color, 3.0)
            label = short_label(name)
            if distances is not None:
                label += f"\n{_fmt_distance(distances[i, j])}"
            ax.set_title(label, fontsize=8, color=color)
    return save(fig, out)
