"""The report and comparison pages, each built once as HTML and once as Markdown
from the same tables and figures, and written into a report folder.

The HTML page needs nothing beside itself (figures as base64 data URIs, the CSS
of ``style.css`` inline) so it can be mailed or archived as one file. The
Markdown summary sits next to its figures, so it links them by bare file name.
Every string that reaches either is escaped: experiment names, class names and
config values come from users and must not become markup (Markdown renderers
pass raw HTML through, so the summary is HTML-escaped too).
"""

from __future__ import annotations

import base64
import html
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import quote

import pandas as pd

from pipeline import paths
from pipeline.evaluation.metric_names import precision_key
from pipeline.reporting.figures import (
    COMPARISON,
    CONFUSION,
    CROSS_SPLIT_DUPLICATES,
    LABEL_QUALITY,
    SUSPECT_LABELS,
    WORST_QUERIES,
    caption,
)
from pipeline.reporting.tables import (
    COURSE_K,
    COURSE_TARGET,
    AuditTables,
    FailureTables,
    Headline,
    Table,
    accuracy_table,
    baseline_table,
    by_epoch_table,
    compare_times_table,
    config_table,
    course_target_applies,
    final_table,
    fmt_duration,
    headline,
    times_table,
    train_epoch_seconds,
    training_table,
)
from pipeline.storage import atomic_path, write_text_atomic

__all__ = ["data_uri", "html_figure", "html_headline", "html_page", "html_table", "md_escape", "md_figure",
           "md_headline", "md_table", "place_figures", "render_compare", "render_report", "write_compare",
           "write_report"]

# ---------------------------------------------------------------------------- HTML

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
         ".gif": "image/gif", ".svg": "image/svg+xml"}


def _css() -> str:
    return Path(__file__).with_name("style.css").read_text(encoding="utf-8")


def _html_row(table: Table, r: int | None) -> str:
    cells = []
    for text, numeric, best in table.cells(r):
        names = " ".join(name for name, on in (("num", numeric), ("best", best)) if on)
        attr = f' class="{names}"' if names else ""
        cells.append(f"<td{attr}>{html.escape(text)}</td>")
    return f"<tr>{''.join(cells)}</tr>"


def html_table(table: Table) -> str:
    """``table`` as an HTML table (numeric cells right-aligned, best cells highlighted)."""
    if table.empty:
        return '<p class="muted">(no rows)</p>'
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "\n".join(_html_row(table, r) for r in range(len(table.rows)))
    foot = f"<tfoot>{_html_row(table, None)}</tfoot>" if table.footer else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody>{foot}</table>"


def data_uri(path: Path) -> str:
    """The file at ``path`` as a base64 ``data:`` URI, typed by its suffix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"figure file {path} does not exist")
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def html_figure(key: str, path: Path, k: int) -> str:
    """Figure ``key`` embedded from ``path``, with its caption (see :func:`.figures.caption`)."""
    return (f'<figure><img src="{data_uri(path)}" alt="{html.escape(key)}">'
            f"<figcaption>{html.escape(caption(key, k))}</figcaption></figure>")


def html_headline(h: Headline) -> str:
    """The headline paragraph, each sentence styled by its class."""
    spans = " ".join(f'<span class="{c}">{html.escape(t)}</span>' if c else html.escape(t)
                     for t, c in h.sentences)
    return f'<p class="headline">{spans}</p>'


def html_page(title: str, body: list[str]) -> str:
    """A complete HTML document titled ``title`` around the ``body`` blocks."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>\n{_css()}</style>\n</head>\n<body>\n"
        + "\n".join(body) + "\n</body>\n</html>\n"
    )


# ---------------------------------------------------------------------------- Markdown


def md_escape(text: str) -> str:
    """``text`` safe inside Markdown and a table cell, on one line."""
    # "<script>" must not pass through as HTML; "|" would split a table cell
    # and "*"/"`" would start markup.
    text = html.escape(str(text), quote=False).replace("\n", " ")
    for ch in ("\\", "|", "*", "`"):
        text = text.replace(ch, "\\" + ch)
    return text


def _md_row(table: Table, r: int | None) -> str:
    parts = []
    for text, _, best in table.cells(r):
        text = md_escape(text)
        parts.append(f"**{text}**" if (r is None or best) and text else text)  # the footer is always bold
    return "| " + " | ".join(parts) + " |"


def md_table(table: Table) -> str:
    """``table`` as a pipe table; best cells and the footer in bold."""
    if table.empty:
        return "_(no rows)_"
    sep = "| " + " | ".join("---:" if c in table.numeric else "---"
                            for c in range(len(table.header))) + " |"
    lines = ["| " + " | ".join(md_escape(h) for h in table.header) + " |", sep]
    lines += [_md_row(table, r) for r in range(len(table.rows))]
    if table.footer:
        lines.append(_md_row(table, None))
    return "\n".join(lines)


def md_figure(key: str, path: Path, k: int) -> str:
    """An image link to ``path``'s file name and its caption in italics."""
    return f"![{md_escape(key)}]({quote(Path(path).name)})\n\n_{md_escape(caption(key, k))}_"


def md_headline(h: Headline) -> str:
    """The headline sentences as one bold paragraph."""
    return "**" + " ".join(md_escape(t) for t, _ in h.sentences) + "**"


# ---------------------------------------------------------------------------- both at once


class _Page:
    """A page built block by block in both formats, so the two cannot drift apart."""

    def __init__(self, title: str, k: int) -> None:
        self.title, self.k = title, k
        self.html = [f"<h1>{html.escape(title)}</h1>"]
        self.md = [f"# {md_escape(title)}", ""]

    def block(self, html_block: str, md_block: str) -> None:
        """Add a block given in each format (already escaped)."""
        self.html.append(html_block)
        self.md += [md_block, ""]

    def heading(self, text: str, note: str = "", md_note: str | None = None) -> None:
        """A section heading and, unless empty, a muted note under it (``md_note`` in Markdown, if given)."""
        self.html.append(f"<h2>{text}</h2>")
        self.md += [f"## {text}", ""]
        if note:
            self.block(f'<p class="muted">{html.escape(note)}</p>', md_escape(note if md_note is None else md_note))

    def figure(self, key: str, path: Path) -> None:
        """Figure ``key``: embedded in HTML, linked by file name in Markdown, captioned in both."""
        self.block(html_figure(key, Path(path), self.k), md_figure(key, Path(path), self.k))

    def table(self, table: Table) -> None:
        """``table`` in both formats."""
        self.block(html_table(table), md_table(table))

    def render(self) -> tuple[str, str]:
        """``(html, markdown)`` of the page so far."""
        return html_page(self.title, self.html), "\n".join(self.md)


def place_figures(out_dir: Path, figures: Mapping[str, Path]) -> dict[str, Path]:
    """Copy figures that live elsewhere into ``out_dir`` so Markdown links resolve.

    Returns each key's path inside ``out_dir``; a file name already taken gets
    its key as a prefix. Raises ``FileNotFoundError`` for a missing figure.
    """
    placed: dict[str, Path] = {}
    used: set[str] = set()
    for key, src in figures.items():
        src = Path(src)
        if not src.is_file():
            raise FileNotFoundError(f"figure {key!r}: file {src} does not exist")
        if src.resolve().parent == out_dir.resolve():
            dest = src
        else:
            name = src.name if src.name not in used else f"{key}-{src.name}"
            dest = out_dir / name
            with atomic_path(dest) as tmp:
                shutil.copyfile(src, tmp)
        used.add(dest.name)
        placed[key] = dest
    return placed


def _write_folder(out_dir: Path, figures: Mapping[str, Path],
                  render: Callable[[dict[str, Path]], tuple[str, str]]) -> dict[str, Path]:
    """Copy ``figures`` into ``out_dir``, then write ``render(placed figures)`` there as
    ``index.html`` and ``summary.md``, each atomically. Returns ``{"html": ..., "markdown": ...}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    page, summary = render(place_figures(out_dir, figures))
    written = {"html": out_dir / paths.REPORT_HTML, "markdown": out_dir / paths.REPORT_MARKDOWN}
    write_text_atomic(written["html"], page)
    write_text_atomic(written["markdown"], summary)
    return written


# ---------------------------------------------------------------------------- the report of one experiment

_TRAINING_NOTE = ("Images forwarded and triplets in the loss per epoch; a batch-structured list forwards each "
                  "distinct image of a batch once for all of its triplets.")
_BASELINE_NOTE = "kNN on raw pixels, same queries and metrics."
_EPOCH_0_NOTE = "Epoch 0 is the network before training;"
# Figures shown in the failure and audit sections rather than under "Figures".
_FAILURE_FIGURES = (WORST_QUERIES, CONFUSION)
_AUDIT_FIGURES = (SUSPECT_LABELS, CROSS_SPLIT_DUPLICATES, LABEL_QUALITY)


def _failure_sections(page: _Page, failures: FailureTables, figures: Mapping[str, Path]) -> None:
    """Add the worst queries, precision by class and class confusion to ``page``."""
    k = page.k
    worst = (f"Validation queries of epoch {failures.epoch} with the lowest precision@{k} (ties by image id; "
             "queries whose class has no training image are left out).")
    by_class = (f"Epoch {failures.epoch}, worst first; n/a: no training image of the class. The last column is the "
                f"other class most frequent among the class's {k} nearest training images.")
    confusion = (f"Epoch {failures.epoch}; rows: validation classes, columns: the classes of their {k} nearest "
                 "training images. With many classes only some ticks are named; the table above lists every class.")
    sections = [("Worst queries", worst, WORST_QUERIES, failures.worst),
                ("Precision by class", by_class, None, failures.per_class),
                ("Class confusion", confusion, CONFUSION, None)]
    for heading, note, key, table in sections:
        page.heading(heading, note)
        if key in figures:
            page.figure(key, figures[key])
        if table is not None:
            page.table(table)


def _audit_section(page: _Page, audit: AuditTables, figures: Mapping[str, Path]) -> None:
    """Add the label audit of the last epoch: its counts, the suspects, the leaked duplicates, the scores."""
    page.heading(f"Label audit (epoch {audit.epoch})",
                 "Training images whose nearest neighbours, pooled over the saved epochs, mostly carry another "
                 "label are suspects: some are mislabelled, others ambiguous or unusual. The audit shows them; "
                 "it does not call them errors. python -m pipeline.show audit lists them all.")
    page.table(audit.summary)
    if SUSPECT_LABELS in figures:
        page.figure(SUSPECT_LABELS, figures[SUSPECT_LABELS])
    if not audit.suspects.empty:
        page.table(audit.suspects)
    if CROSS_SPLIT_DUPLICATES in figures:
        page.figure(CROSS_SPLIT_DUPLICATES, figures[CROSS_SPLIT_DUPLICATES])
    else:
        line = "No validation image duplicates a training image."
        page.block(f"<p>{html.escape(line)}</p>", md_escape(line))
    if LABEL_QUALITY in figures:
        page.figure(LABEL_QUALITY, figures[LABEL_QUALITY])


def render_report(experiment: str, metrics: pd.DataFrame, figures: Mapping[str, Path],
                  baseline: Mapping[str, Any], config: Mapping[str, Any],
                  stage_times: pd.DataFrame, notes: list[str] | None = None,
                  *, k: int = COURSE_K, target: float = COURSE_TARGET,
                  training: pd.DataFrame | None = None, failures: FailureTables | None = None,
                  audit: AuditTables | None = None) -> tuple[str, str]:
    """Return ``(html, markdown)`` reporting one experiment: headline, notes, accuracy
    and training by epoch, figures, where the model fails, raw-pixel baseline, time
    per stage and resolved configuration.

    ``k`` is ``[ValidateEpoch] k``: the headline and captions speak of
    precision@k and its columns lead the tables. ``target`` is quoted in the
    headline only for the course's task (see :func:`.tables.course_target_applies`
    on ``config``, the experiment's ``config.json``). ``figures`` maps a caption
    key of :mod:`.figures` to a PNG path; the HTML embeds the file, the Markdown
    links to its bare file name. Notes (collapse warnings and the like) are
    listed right under the headline so they are not missed. ``failures`` adds the
    sections of where the model fails, with the figures keyed
    ``figures.WORST_QUERIES`` and ``figures.CONFUSION`` (shown there, not
    under "Figures"); ``audit`` the label audit's section, with the figures keyed
    ``SUSPECT_LABELS``, ``CROSS_SPLIT_DUPLICATES`` and ``LABEL_QUALITY``.
    """
    page = _Page(f"Deep ranking report: {experiment}", k)
    head = headline(metrics, baseline, k, target if course_target_applies(config, k) else None)
    page.block(html_headline(head), md_headline(head))
    notes = [str(n) for n in (notes or [])]
    if notes:
        page.heading("Notes")
        page.block('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>",
                   "\n".join(f"- {md_escape(n)}" for n in notes))
    page.heading("Accuracy by epoch", f"{_EPOCH_0_NOTE} best value per column highlighted.",
                 f"{_EPOCH_0_NOTE} best value per column in bold.")
    page.table(accuracy_table(metrics, k))
    if training is not None and len(training):
        page.heading("Training by epoch", _TRAINING_NOTE)
        page.table(training_table(training))
    sectioned = (_FAILURE_FIGURES if failures is not None else ()) + (_AUDIT_FIGURES if audit is not None else ())
    general = {key: p for key, p in figures.items() if key not in sectioned}
    if general:
        page.heading("Figures")
        for key, path in general.items():
            page.figure(key, path)
    if failures is not None:
        _failure_sections(page, failures, figures)
    if audit is not None:
        _audit_section(page, audit, figures)
    page.heading("Raw-pixel baseline", _BASELINE_NOTE)
    page.table(baseline_table(metrics, baseline, k))
    page.heading("Time per stage")
    page.table(times_table(stage_times))
    epochs = train_epoch_seconds(stage_times)
    if len(epochs):
        line = f"{len(epochs)} training epochs, mean {fmt_duration(epochs.mean())} per epoch."
        page.block(f"<p>{html.escape(line)}</p>", md_escape(line))
    page.heading("Resolved configuration")
    page.table(config_table(config))
    return page.render()


def write_report(out_dir: Path, experiment: str, metrics: pd.DataFrame,
                 figures: Mapping[str, Path], baseline: Mapping[str, Any],
                 config: Mapping[str, Any], stage_times: pd.DataFrame,
                 notes: list[str] | None = None, *, k: int = COURSE_K,
                 target: float = COURSE_TARGET, training: pd.DataFrame | None = None,
                 failures: FailureTables | None = None, audit: AuditTables | None = None) -> dict[str, Path]:
    """Write ``index.html`` and ``summary.md`` of :func:`render_report` into ``out_dir`` atomically.

    Figures outside ``out_dir`` are copied in first. Returns
    ``{"html": ..., "markdown": ...}``.
    """
    return _write_folder(out_dir, figures, lambda placed: render_report(
        experiment, metrics, placed, baseline, config, stage_times, notes,
        k=k, target=target, training=training, failures=failures, audit=audit))


# ---------------------------------------------------------------------------- experiments compared


def render_compare(experiments: Mapping[str, pd.DataFrame], times: Mapping[str, pd.DataFrame],
                   figure: Path, *, k: int = COURSE_K) -> tuple[str, str]:
    """Return ``(html, markdown)`` comparing experiments side by side: validation
    precision@k by epoch, final-epoch metrics and training time.

    ``experiments`` maps a name to its metrics table, ``times`` a name to its
    stage times (names missing from either show "n/a"); ``figure`` is the
    comparison plot, embedded in the HTML and linked by file name in Markdown;
    ``k`` is ``[ValidateEpoch] k``, whose validation precision is compared by epoch.
    """
    names = list(experiments) + [n for n in times if n not in experiments]
    all_experiments = {n: experiments.get(n, pd.DataFrame({"epoch": []})) for n in names}
    by_epoch = by_epoch_table(all_experiments, precision_key(k, "val"))
    finals = final_table(all_experiments, k)
    timing = compare_times_table(names, times)
    page = _Page("Deep ranking: experiment comparison", k)
    listed = ", ".join(names)
    page.block(f"<p>{len(names)} experiments: {html.escape(listed)}.</p>",
               f"{len(names)} experiments: {md_escape(listed)}.")
    page.figure(COMPARISON, figure)
    page.heading(f"Validation precision@{k} by epoch", "Best experiment per epoch highlighted.",
                 "Best experiment per epoch in bold.")
    page.table(by_epoch)
    page.heading("Final-epoch metrics")
    page.table(finals)
    page.heading("Training time")
    page.table(timing)
    return page.render()


def write_compare(out_dir: Path, experiments: Mapping[str, pd.DataFrame],
                  times: Mapping[str, pd.DataFrame], figure: Path, *, k: int = COURSE_K) -> dict[str, Path]:
    """Write the comparison ``index.html`` and ``summary.md`` into ``out_dir``.

    The figure is copied in first unless it is already there. Returns
    ``{"html": ..., "markdown": ...}``.
    """
    return _write_folder(out_dir, {COMPARISON: Path(figure)},
                         lambda placed: render_compare(experiments, times, placed[COMPARISON], k=k))
