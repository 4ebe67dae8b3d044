"""What the report's image grids cost: a neighbour grid (the report draws four: nearest and
farthest training images, the worst queries, the audit's suspects) at the shipped size,
5 queries x 10 neighbours, and at 10 x 10.

    .venv/bin/python bench/bench_figures.py
    .venv/bin/python bench/bench_figures.py --quick     # 2 x 3 and 5 x 10, fewer repeats

Prints the seconds per grid (best of ``--repeat`` after a warm-up), then the same grid
drawn as before, in the same run: the previous ``plot_neighbor_grid`` verbatim, its axes
placed by matplotlib's constrained layout engine and the figure cleared after saving.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import common  # noqa: F401  (puts the repo on sys.path)
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec

from pipeline.reporting import figures
from pipeline.storage import atomic_path


def grid_inputs(q: int, k: int, size: int = 28) -> dict:
    """Seeded grey images and class names like Fashion-MNIST's."""
    rng = np.random.default_rng(0)
    names = ["T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
    return {
        "query_images": rng.integers(0, 256, (q, size, size), dtype=np.uint8),
        "query_names": [names[i % 10] for i in range(q)],
        "neighbor_images": rng.integers(0, 256, (q, k, size, size), dtype=np.uint8),
        "neighbor_names": [[names[(i + j) % 10] for j in range(k)] for i in range(q)],
        "distances": rng.uniform(0.1, 3.0, (q, k)),
        "title": "validation: nearest training images",
    }


def new_figure(width: float, height: float) -> Figure:
    """The figure as before: the constrained layout engine places every axes."""
    fig = Figure(figsize=(width, height), dpi=figures.DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, out: Path) -> Path:
    """Saving as before: the figure cleared afterwards."""
    try:
        with atomic_path(Path(out)) as tmp:
            fig.savefig(tmp, format="png", dpi=figures.DPI)
    finally:
        fig.clear()
    return Path(out)


def previous_neighbor_grid(query_images: np.ndarray, query_names: list[str], neighbor_images: np.ndarray,
                           neighbor_names: list[list[str]], distances: np.ndarray | None, out: Path, title: str,
                           query_notes: Sequence[str] | None = None, query_role: str = "query") -> Path:
    """``figures.plot_neighbor_grid`` as it was before the fixed grid (b8b5cc8), verbatim."""
    query_images = np.asarray(query_images)
    neighbor_images = np.asarray(neighbor_images)
    distances = None if distances is None else np.asarray(distances, dtype=float)
    k = figures._check_shapes(query_images, query_names, neighbor_images, neighbor_names, distances, query_notes)
    q = len(query_names)

    cell = 1.45
    # A thin empty column sets the query apart from its neighbours.
    width_ratios = [1.0, 0.12] + [1.0] * k
    fig = new_figure(cell * (sum(width_ratios)) + 0.3, (cell + 0.45) * max(q, 1) + 0.7)
    fig.suptitle(f"{title}\ngreen frame: same class as query · red frame: other class",
                 fontsize=11)
    if q == 0:
        figures.no_data(fig.add_subplot(), "no queries")
        return save(fig, out)
    grid = GridSpec(q, k + 2, figure=fig, width_ratios=width_ratios)
    for i in range(q):
        query_class = str(query_names[i])
        matches = sum(str(n) == query_class for n in neighbor_names[i])
        note = f"{matches}/{k} same class" if query_notes is None else str(query_notes[i])
        ax = fig.add_subplot(grid[i, 0])
        figures._show(ax, query_images[i], figures.QUERY_FRAME_COLOR, 4.0)
        # "query: " eats into the ~22 bold characters that fit across a cell.
        ax.set_title(f"{query_role}: {figures.short_label(query_class, 20 - len(query_role))}\n{note}", fontsize=8,
                     fontweight="bold")
        for j in range(k):
            name = str(neighbor_names[i][j])
            color = figures.SAME_CLASS_COLOR if name == query_class else figures.OTHER_CLASS_COLOR
            ax = fig.add_subplot(grid[i, j + 2])
            figures._show(ax, neighbor_images[i, j], color, 3.0)
            label = figures.short_label(name)
            if distances is not None:
                label += f"\n{figures._fmt_distance(distances[i, j])}"
            ax.set_title(label, fontsize=8, color=color)
    return save(fig, out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 x 3 and 5 x 10 grids, 2 repeats")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    shapes = [(2, 3), (5, 10)] if args.quick else [(5, 10), (10, 10)]
    repeat = 2 if args.quick else args.repeat
    print(f"{'grid':>8} {'ours s':>8} {'before s':>9} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for q, k in shapes:
            inputs = grid_inputs(q, k)
            ours = common.best_of(lambda: figures.plot_neighbor_grid(**inputs, out=Path(tmp) / "ours.png"), repeat)
            before = common.best_of(lambda: previous_neighbor_grid(**inputs, out=Path(tmp) / "before.png"), repeat)
            print(f"{f'{q} x {k}':>8} {ours:8.2f} {before:9.2f} {ours / before:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
