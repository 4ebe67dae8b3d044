"""What the report's image grids cost: a neighbour grid (the report draws four: nearest and
farthest training images, the worst queries, the audit's suspects) at the shipped size,
5 queries x 10 neighbours, and at 10 x 10.

    .venv/bin/python bench/bench_figures.py
    .venv/bin/python bench/bench_figures.py --quick     # 2 x 3 and 5 x 10, fewer repeats

Prints the seconds per grid (best of ``--repeat`` after a warm-up), then the same grid
drawn as before, in the same run: placed by matplotlib's constrained layout engine, and
the figure cleared after saving. Both PNGs have the same size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from unittest import mock

import common  # noqa: F401  (puts the repo on sys.path)
import numpy as np
from PIL import Image

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


def constrained(width: float, height: float, layout: str | None = "constrained"):
    """The figure as before: the layout engine places every grid."""
    return original_new_figure(width, height, "constrained")


def save_then_clear(fig, out):
    """Saving as before: the figure cleared afterwards."""
    with atomic_path(Path(out)) as tmp:
        fig.savefig(tmp, format="png", dpi=figures.DPI)
    fig.clear()
    return Path(out)


original_new_figure = figures.new_figure


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
            with mock.patch.object(figures, "new_figure", constrained), mock.patch.object(figures, "save",
                                                                                       save_then_clear):
                before = common.best_of(lambda: figures.plot_neighbor_grid(**inputs, out=Path(tmp) / "before.png"),
                                        repeat)
            sizes = {Image.open(Path(tmp) / name).size for name in ("ours.png", "before.png")}
            if len(sizes) != 1:
                print(f"FAIL: the {q} x {k} grids differ in size: {sizes}")
                return 1
            print(f"{f'{q} x {k}':>8} {ours:8.2f} {before:9.2f} {ours / before:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
