"""Reports of experiments: PNG figures, and HTML + Markdown pages built from them.

Import the public API from here; the modules hold one concept each:
:mod:`.curves`, :mod:`.image_grids` and :mod:`.confusion_map` draw figures on :mod:`.figure_canvas`;
:mod:`.report_page` and :mod:`.compare_page` assemble pages from the tables of
:mod:`.metric_tables` and :mod:`.run_tables` (model in :mod:`.tables`), the
:mod:`.headline`, figure :mod:`.captions`, and render them with
:mod:`.html_render` / :mod:`.markdown_render`; :mod:`.page_files` writes them.
:mod:`.inputs` reads a report's inputs from saved artifacts; :mod:`.failure_report` builds the
sections of where the model fails (:mod:`.failure_inputs`, :mod:`.failure_tables`) from
validation's sidecars.
"""

from pipeline.reporting.captions import (
    ACCURACY,
    COMPARISON,
    CONFUSION,
    FARTHEST_NEIGHBORS,
    LOSS,
    NEAREST_NEIGHBORS,
    WORST_QUERIES,
)
from pipeline.reporting.compare_page import render_compare, write_compare
from pipeline.reporting.confusion_map import plot_confusion
from pipeline.reporting.course import COURSE_K, COURSE_TARGET
from pipeline.reporting.curves import plot_accuracy_by_epoch, plot_compare, plot_loss_by_epoch
from pipeline.reporting.image_grids import plot_neighbor_grid
from pipeline.reporting.metric_columns import metric_label
from pipeline.reporting.page_files import HTML_NAME, MARKDOWN_NAME
from pipeline.reporting.report_page import render_report, write_report

__all__ = [
    "ACCURACY",
    "COMPARISON",
    "CONFUSION",
    "COURSE_K",
    "COURSE_TARGET",
    "FARTHEST_NEIGHBORS",
    "HTML_NAME",
    "LOSS",
    "MARKDOWN_NAME",
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
