"""The report of one experiment: headline, notes, accuracy and training by
epoch, figures, where the model fails (worst queries, precision by class, class
confusion), raw-pixel baseline, time per stage and resolved configuration.

Built once as HTML (self-contained) and once as Markdown, section by section,
from the same tables.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from pipeline.reporting.captions import CONFUSION, WORST_QUERIES
from pipeline.reporting.course import COURSE_K, COURSE_TARGET, course_target_applies
from pipeline.reporting.failure_tables import FailureTables
from pipeline.reporting.headline import headline
from pipeline.reporting.html_render import html_figure, html_headline, html_page, html_table
from pipeline.reporting.markdown_render import md_escape, md_figure, md_headline, md_table
from pipeline.reporting.metric_tables import accuracy_table, baseline_table
from pipeline.reporting.page_files import place_figures, write_pages
from pipeline.reporting.run_tables import config_table, times_table, train_epoch_seconds, training_table
from pipeline.reporting.tables import fmt_duration

__all__ = ["render_report", "write_report"]

_TRAINING_NOTE = ("Images forwarded and triplets in the loss per epoch; a batch-structured list forwards each "
                  "distinct image of a batch once for all of its triplets.")
_BASELINE_NOTE = "kNN on raw pixels, same queries and metrics."
_EPOCH_0_NOTE = "Epoch 0 is the network before training;"
# Figures shown in the failure sections rather than under "Figures".
_FAILURE_FIGURES = (WORST_QUERIES, CONFUSION)


def _failure_sections(failures: FailureTables, figures: Mapping[str, Path], k: int) -> tuple[list[str], list[str]]:
    """HTML blocks and Markdown lines of the worst queries, precision by class and class confusion."""
    worst = (f"Validation queries of epoch {failures.epoch} with the lowest precision@{k} (ties by image id; "
             "queries whose class has no training image are left out).")
    by_class = (f"Epoch {failures.epoch}, worst first; n/a: no training image of the class. The last column is the "
                f"other class most frequent among the class's {k} nearest training images.")
    confusion = (f"Epoch {failures.epoch}; rows: validation classes, columns: the classes of their {k} nearest "
                 "training images. With many classes only some ticks are named; the table above lists every class.")
    sections = [("Worst queries", worst, WORST_QUERIES, failures.worst),
                ("Precision by class", by_class, None, failures.per_class),
                ("Class confusion", confusion, CONFUSION, None)]
    h: list[str] = []
    m: list[str] = []
    for heading, note, key, table in sections:
        h += [f"<h2>{heading}</h2>", f'<p class="muted">{html.escape(note)}</p>']
        m += [f"## {heading}", "", md_escape(note), ""]
        if key in figures:
            h.append(html_figure(key, Path(figures[key]), k))
            m += [md_figure(key, Path(figures[key]), k), ""]
        if table is not None:
            h.append(html_table(table))
            m += [md_table(table), ""]
    return h, m


def _epoch_time_line(stage_times: pd.DataFrame) -> str:
    secs = train_epoch_seconds(stage_times)
    if not len(secs):
        return ""
    return f"{len(secs)} training epochs, mean {fmt_duration(secs.mean())} per epoch."


def render_report(experiment: str, metrics: pd.DataFrame, figures: Mapping[str, Path],
                  baseline: Mapping[str, Any], config: Mapping[str, Any],
                  stage_times: pd.DataFrame, notes: list[str] | None = None,
                  *, k: int = COURSE_K, target: float = COURSE_TARGET,
                  training: pd.DataFrame | None = None, failures: FailureTables | None = None) -> tuple[str, str]:
    """Return ``(html, markdown)`` reporting one experiment.

    ``k`` is ``[ValidateEpoch] k``: the headline and captions speak of
    precision@k and its columns lead the tables. ``target`` is quoted in the
    headline only for the course's task (see :func:`.course.course_target_applies`
    on ``config``, the experiment's ``config.json``). ``figures`` maps a key of
    :mod:`.captions` to a PNG path; the HTML embeds the file, the Markdown links
    to its bare file name. Notes (collapse warnings and the like) are listed
    right under the headline so they are not missed. ``failures`` adds the
    sections of where the model fails, with the figures keyed
    ``captions.WORST_QUERIES`` and ``captions.CONFUSION`` (shown there, not
    under "Figures").
    """
    title = f"Deep ranking report: {experiment}"
    head = headline(metrics, baseline, k, target if course_target_applies(config, k) else None)
    notes = [str(n) for n in (notes or [])]
    acc = accuracy_table(metrics, k)

    h = [f"<h1>{html.escape(title)}</h1>", html_headline(head)]
    m = [f"# {md_escape(title)}", "", md_headline(head), ""]
    if notes:
        h += ["<h2>Notes</h2>", '<ul class="notes">'
              + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"]
        m += ["## Notes", ""] + [f"- {md_escape(n)}" for n in notes] + [""]
    h += ["<h2>Accuracy by epoch</h2>", f'<p class="muted">{_EPOCH_0_NOTE} best value per column highlighted.</p>',
          html_table(acc)]
    m += ["## Accuracy by epoch", "", f"{_EPOCH_0_NOTE} best value per column in bold.", "", md_table(acc), ""]
    if training is not None and len(training):
        train = training_table(training)
        h += ["<h2>Training by epoch</h2>", f'<p class="muted">{html.escape(_TRAINING_NOTE)}</p>',
              html_table(train)]
        m += ["## Training by epoch", "", md_escape(_TRAINING_NOTE), "", md_table(train), ""]
    general = {key: p for key, p in figures.items() if failures is None or key not in _FAILURE_FIGURES}
    if general:
        h += ["<h2>Figures</h2>"] + [html_figure(key, Path(p), k) for key, p in general.items()]
        m += ["## Figures", ""] + [md_figure(key, Path(p), k) + "\n" for key, p in general.items()]
    if failures is not None:
        fh, fm = _failure_sections(failures, figures, k)
        h += fh
        m += fm
    base = baseline_table(metrics, baseline, k)
    h += ["<h2>Raw-pixel baseline</h2>", f'<p class="muted">{_BASELINE_NOTE}</p>', html_table(base)]
    m += ["## Raw-pixel baseline", "", _BASELINE_NOTE, "", md_table(base), ""]
    times = times_table(stage_times)
    h += ["<h2>Time per stage</h2>", html_table(times)]
    m += ["## Time per stage", "", md_table(times), ""]
    epoch_line = _epoch_time_line(stage_times)
    if epoch_line:
        h.append(f"<p>{html.escape(epoch_line)}</p>")
        m += [md_escape(epoch_line), ""]
    conf = config_table(config)
    h += ["<h2>Resolved configuration</h2>", html_table(conf)]
    m += ["## Resolved configuration", "", md_table(conf), ""]
    return html_page(title, h), "\n".join(m)


def write_report(out_dir: Path, experiment: str, metrics: pd.DataFrame,
                 figures: Mapping[str, Path], baseline: Mapping[str, Any],
                 config: Mapping[str, Any], stage_times: pd.DataFrame,
                 notes: list[str] | None = None, *, k: int = COURSE_K,
                 target: float = COURSE_TARGET, training: pd.DataFrame | None = None,
                 failures: FailureTables | None = None) -> dict[str, Path]:
    """Write ``index.html`` and ``summary.md`` of :func:`render_report` into ``out_dir`` atomically.

    Figures outside ``out_dir`` are copied in first. Returns
    ``{"html": ..., "markdown": ...}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    placed = place_figures(out_dir, figures)
    page, summary = render_report(experiment, metrics, placed, baseline, config, stage_times, notes,
                                  k=k, target=target, training=training, failures=failures)
    return write_pages(out_dir, page, summary)
