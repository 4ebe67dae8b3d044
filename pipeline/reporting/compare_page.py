"""The comparison of several experiments: validation precision@k by epoch,
final-epoch metrics and training time, side by side."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Mapping

import pandas as pd

from pipeline.evaluation.metric_names import precision_key
from pipeline.reporting.captions import COMPARISON
from pipeline.reporting.course import COURSE_K
from pipeline.reporting.html_render import html_figure, html_page, html_table
from pipeline.reporting.markdown_render import md_escape, md_figure, md_table
from pipeline.reporting.metric_tables import by_epoch_table, final_table
from pipeline.reporting.page_files import place_figures, write_pages
from pipeline.reporting.run_tables import compare_times_table

__all__ = ["render_compare", "write_compare"]


def render_compare(experiments: Mapping[str, pd.DataFrame], times: Mapping[str, pd.DataFrame],
                   figure: Path, *, k: int = COURSE_K) -> tuple[str, str]:
    """Return ``(html, markdown)`` comparing experiments side by side.

    ``experiments`` maps a name to its metrics table, ``times`` a name to its
    stage times (names missing from either show "n/a"); ``figure`` is the
    comparison plot, embedded in the HTML and linked by file name in Markdown;
    ``k`` is ``[ValidateEpoch] k``, whose validation precision is compared by epoch.
    """
    names = list(experiments) + [n for n in times if n not in experiments]
    all_experiments = {n: experiments.get(n, pd.DataFrame({"epoch": []})) for n in names}
    title = "Deep ranking: experiment comparison"
    by_epoch = by_epoch_table(all_experiments, precision_key(k, "val"))
    finals = final_table(all_experiments, k)
    timing = compare_times_table(names, times)
    by_epoch_title = f"Validation precision@{k} by epoch"

    h = [f"<h1>{html.escape(title)}</h1>",
         f"<p>{len(names)} experiments: {html.escape(', '.join(names))}.</p>",
         html_figure(COMPARISON, Path(figure), k),
         f"<h2>{by_epoch_title}</h2>",
         '<p class="muted">Best experiment per epoch highlighted.</p>', html_table(by_epoch),
         "<h2>Final-epoch metrics</h2>", html_table(finals),
         "<h2>Training time</h2>", html_table(timing)]
    m = [f"# {md_escape(title)}", "",
         f"{len(names)} experiments: {md_escape(', '.join(names))}.", "",
         md_figure(COMPARISON, Path(figure), k), "",
         f"## {by_epoch_title}", "",
         "Best experiment per epoch in bold.", "", md_table(by_epoch), "",
         "## Final-epoch metrics", "", md_table(finals), "",
         "## Training time", "", md_table(timing), ""]
    return html_page(title, h), "\n".join(m)


def write_compare(out_dir: Path, experiments: Mapping[str, pd.DataFrame],
                  times: Mapping[str, pd.DataFrame], figure: Path, *, k: int = COURSE_K) -> dict[str, Path]:
    """Write the comparison ``index.html`` and ``summary.md`` into ``out_dir``.

    The figure is copied in first unless it is already there. Returns
    ``{"html": ..., "markdown": ...}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    placed = place_figures(out_dir, {COMPARISON: Path(figure)})[COMPARISON]
    page, summary = render_compare(experiments, times, placed, k=k)
    return write_pages(out_dir, page, summary)
