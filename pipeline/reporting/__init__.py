"""Reports of experiments: PNG figures, and HTML + Markdown pages built from them.

The public API is importable from here. :mod:`.inputs` reads a report's inputs
from saved artifacts, :mod:`.tables` turns them into the tables (and headline)
a page shows, :mod:`.figures` draws the PNGs and captions them, :mod:`.pages`
renders and writes the pages, and :mod:`.experiment_report` runs all of it for
one experiment's report folder or the comparison of several.
"""

from pipeline.reporting.figures import (
    ACCURACY,
    COMPARISON,
    CONFUSION,
    FARTHEST_NEIGHBORS,
    LOSS,
    NEAREST_NEIGHBORS,
    WORST_QUERIES,
    plot_accuracy_by_epoch,
    plot_compare,
    plot_confusion,
    plot_loss_by_epoch,
    plot_neighbor_grid,
)
from pipeline.reporting.pages import render_compare, render_report, write_compare, write_report
from pipeline.reporting.tables import COURSE_K, COURSE_TARGET, metric_label

__all__ = [
    "ACCURACY",
    "COMPARISON",
    "CONFUSION",
    "COURSE_K",
    "COURSE_TARGET",
    "FARTHEST_NEIGHBORS",
    "LOSS",
    "NEAREST_NEIGHBORS",
    "WORST_QUERIES",
    "metric_label",
    "plot_accuracy_by_epoch",
    "plot_compare",
    "plot_confusion",
    "plot_loss_by_epoch",
    "plot_neighbor_grid",
    "render_compare",
    "render_report",
    "write_compare",
    "write_report",
]
