"""HTML and Markdown reports for one experiment and for a comparison of several.

The HTML page is self-contained (figures as base64 data URIs, inline CSS, no
external resources) so it can be mailed or archived as one file; the Markdown
summary refers to the figures by file name, since they sit next to it. Both are
built from the same table model, so the two never disagree on a number.
Every string that reaches HTML is escaped: experiment names, class names and
config values come from users and must not become markup.
"""

from __future__ import annotations

import base64
import html
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import quote

import pandas as pd

from pipeline.atomic import atomic_path, write_text_atomic
from pipeline.reporting.figures import metric_label

__all__ = [
    "COURSE_TARGET",
    "render_report",
    "write_report",
    "render_compare",
    "write_compare",
]

COURSE_TARGET = 0.60
HEADLINE_METRIC = "precision_at_30_val"
HTML_NAME = "index.html"
MARKDOWN_NAME = "summary.md"
# Known metrics first, in the order a reader scans them; others follow as found.
METRIC_ORDER = (
    "precision_at_30_val",
    "precision_at_30_train",
    "precision_at_1_val",
    "precision_at_10_val",
    "r_precision_val",
    "map_at_r_val",
    "triplet_precision_val",
)
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
         ".gif": "image/gif", ".svg": "image/svg+xml"}

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #eee; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; }
th { background: #f3f3f3; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { background: #d9f2d9; font-weight: bold; }
tfoot td { font-weight: bold; background: #fafafa; }
.headline { font-size: 1.15em; background: #f6f8fa; border-left: 4px solid #888;
            padding: .6em 1em; }
.met { color: #1a7f37; font-weight: bold; }
.missed { color: #b42318; font-weight: bold; }
.notes li { margin: .2em 0; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: .9em; }
.muted { color: #777; }
"""


# --------------------------------------------------------------------------- tables


@dataclass
class _Table:
    """A table both renderers share; cells hold plain (unescaped) text."""

    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    best: set[tuple[int, int]] = field(default_factory=set)
    numeric: set[int] = field(default_factory=set)
    footer: list[str] | None = None


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def _fmt(value: Any, digits: int = 3) -> str:
    if _is_missing(value):
        return "n/a"
    return f"{float(value):.{digits}f}"


def _best(values: Sequence[Any], higher: bool = True) -> set[int]:
    """Positions of the best values; ties as displayed (3 decimals) all count."""
    shown = {i: round(float(v), 3) for i, v in enumerate(values) if not _is_missing(v)}
    if len(shown) < 2:  # a lone value is trivially "best" and the colour would mislead
        return set()
    if len(set(shown.values())) == 1:  # all tied: nothing stands out
        return set()
    target = max(shown.values()) if higher else min(shown.values())
    return {i for i, v in shown.items() if v == target}


def _mark_best(table: _Table, column: int, values: Sequence[Any], higher: bool = True) -> None:
    table.best.update((r, column) for r in _best(values, higher))


def _html_table(table: _Table) -> str:
    if not table.rows and table.footer is None:
        return '<p class="muted">(no rows)</p>'

    def cells(row: Sequence[str], r: int | None) -> str:
        out = []
        for c, text in enumerate(row):
            cls = []
            if c in table.numeric:
                cls.append("num")
            if r is not None and (r, c) in table.best:
                cls.append("best")
            attr = f' class="{" ".join(cls)}"' if cls else ""
            out.append(f"<td{attr}>{html.escape(text)}</td>")
        return "".join(out)

    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "\n".join(f"<tr>{cells(row, r)}</tr>" for r, row in enumerate(table.rows))
    foot = f"<tfoot><tr>{cells(table.footer, None)}</tr></tfoot>" if table.footer else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody>{foot}</table>"


def _md_escape(text: str) -> str:
    # Markdown renderers pass raw HTML through, so "<script>" must be escaped
    # here too; "|" would split a table cell and "*"/"`" would start markup.
    text = html.escape(str(text), quote=False).replace("\n", " ")
    for ch in ("\\", "|", "*", "`"):
        text = text.replace(ch, "\\" + ch)
    return text


def _md_table(table: _Table) -> str:
    if not table.rows and table.footer is None:
        return "_(no rows)_"

    def line(row: Sequence[str], r: int | None) -> str:
        parts = []
        for c, text in enumerate(row):
            text = _md_escape(text)
            if (r is None or (r, c) in table.best) and text:
                text = f"**{text}**"
            parts.append(text)
        return "| " + " | ".join(parts) + " |"

    sep = "| " + " | ".join("---:" if c in table.numeric else "---"
                            for c in range(len(table.header))) + " |"
    lines = ["| " + " | ".join(_md_escape(h) for h in table.header) + " |", sep]
    lines += [line(row, r) for r, row in enumerate(table.rows)]
    if table.footer:
        lines.append(line(table.footer, None))
    return "\n".join(lines)


# ------------------------------------------------------------------- table builders


def _metric_columns(frames: Iterable[pd.DataFrame]) -> list[str]:
    seen: list[str] = []
    for frame in frames:
        seen += [c for c in frame.columns if c != "epoch" and c not in seen]
    known = [c for c in METRIC_ORDER if c in seen]
    return known + [c for c in seen if c not in known]


def _epoch_label(epoch: Any) -> str:
    epoch = int(epoch)
    return "0 (before training)" if epoch == 0 else str(epoch)


def _sorted(metrics: pd.DataFrame) -> pd.DataFrame:
    if "epoch" not in metrics.columns:
        raise ValueError(f"metrics table lacks an 'epoch' column; has {list(metrics.columns)}")
    return metrics.sort_values("epoch", kind="stable").reset_index(drop=True)


def _accuracy_table(metrics: pd.DataFrame) -> _Table:
    metrics = _sorted(metrics)
    columns = _metric_columns([metrics])
    table = _Table(header=["epoch"] + [metric_label(c) for c in columns],
                   numeric=set(range(len(columns) + 1)))
    table.rows = [[_epoch_label(row["epoch"])] + [_fmt(row[c]) for c in columns]
                  for _, row in metrics.iterrows()]
    for j, c in enumerate(columns, start=1):
        _mark_best(table, j, pd.to_numeric(metrics[c], errors="coerce").tolist())
    return table


def _final_value(metrics: pd.DataFrame, column: str) -> tuple[int | None, float | None]:
    """Last epoch with a value in ``column`` (metrics may skip some epochs)."""
    if column not in metrics.columns:
        return None, None
    table = _sorted(metrics)
    valid = pd.to_numeric(table[column], errors="coerce").dropna()
    if valid.empty:
        return None, None
    return int(table.loc[valid.index[-1], "epoch"]), float(valid.iloc[-1])


def _signed(value: float | None) -> str:
    return "n/a" if value is None or _is_missing(value) else f"{value:+.3f}"


def _baseline_table(metrics: pd.DataFrame, baseline: Mapping[str, Any]) -> _Table:
    table = _Table(header=["metric", "raw-pixel kNN", "learned (last epoch)", "difference"],
                   numeric={1, 2, 3})
    order = [c for c in METRIC_ORDER if c in baseline] + [c for c in baseline
                                                         if c not in METRIC_ORDER]
    for key in order:
        raw = None if _is_missing(baseline[key]) else float(baseline[key])
        _, learned = _final_value(metrics, key)
        diff = learned - raw if learned is not None and raw is not None else None
        table.rows.append([metric_label(key), _fmt(raw), _fmt(learned), _signed(diff)])
    return table


def _fmt_duration(seconds: float) -> str:
    if _is_missing(seconds):
        return "n/a"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _stage_seconds(stage_times: pd.DataFrame) -> pd.DataFrame:
    if stage_times.empty and not len(stage_times.columns):
        stage_times = pd.DataFrame({"stage": [], "seconds": []})
    missing = {"stage", "seconds"} - set(stage_times.columns)
    if missing:
        raise ValueError(f"stage times lack column(s) {sorted(missing)}")
    out = stage_times[["stage", "seconds"]].copy()
    out["stage"] = out["stage"].astype(str).astype(object)  # .str needs object dtype when empty
    out["seconds"] = pd.to_numeric(out["seconds"], errors="coerce")
    return out


def _train_epoch_seconds(stage_times: pd.DataFrame) -> pd.Series:
    times = _stage_seconds(stage_times)
    mask = times["stage"].str.match(r"TrainEpoch\b")
    return times.loc[mask, "seconds"].dropna()


def _times_table(stage_times: pd.DataFrame) -> _Table:
    times = _stage_seconds(stage_times)
    total = float(times["seconds"].sum())
    table = _Table(header=["stage", "seconds", "duration", "share"], numeric={1, 2, 3})
    for stage, secs in zip(times["stage"], times["seconds"]):
        share = f"{100 * secs / total:.1f} %" if total > 0 and not _is_missing(secs) else "n/a"
        table.rows.append([stage, _fmt(secs, 1), _fmt_duration(secs), share])
    if table.rows:
        table.footer = ["total", _fmt(total, 1), _fmt_duration(total), "100 %"]
    return table


def _training_table(training: pd.DataFrame) -> _Table:
    """Per epoch: steps, images forwarded, triplets in the loss, triplets per image, active share, loss."""
    table = _Table(header=["epoch", "steps", "images forwarded", "triplets", "triplets / image", "active share",
                           "mean loss"], numeric=set(range(7)))
    for row in training.itertuples(index=False):
        table.rows.append([_epoch_label(row.epoch), str(row.steps), f"{row.images:,}", f"{row.triplets:,}",
                           _fmt(row.triplets_per_image, 2), _fmt(row.active_share, 3), _fmt(row.loss, 4)])
    return table


def _flatten_config(config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for section, body in config.items():
        if isinstance(body, Mapping):
            rows += [(str(section), str(k), _config_value(v)) for k, v in body.items()]
        else:
            rows.append(("", str(section), _config_value(body)))
    return rows


def _config_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _config_table(config: Mapping[str, Any]) -> _Table:
    return _Table(header=["section", "key", "value"],
                  rows=[list(r) for r in _flatten_config(config)])


# ------------------------------------------------------------------ figures, headline


def _caption(key: str) -> str:
    k = key.lower()
    if "loss" in k:
        return ("Triplet loss: mean per epoch (bold), per step (faint) and the share of "
                "triplets with non-zero loss (dashed, right axis).")
    if "neighb" in k or "neighbour" in k:
        which = "Farthest" if "far" in k else "Nearest"
        return (f"{which} training images to sample validation queries (one query per class), with their "
                "Euclidean distance; green frame: same class as the query, red: another class.")
    if "acc" in k or "precision" in k:
        return "Precision@30 on validation and training images by epoch; dotted: raw-pixel kNN."
    if "compar" in k:
        return "Validation precision@30 by epoch for each experiment."
    return key.replace("_", " ").capitalize()


def _data_uri(path: Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"figure file {path} does not exist")
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _html_figure(key: str, path: Path) -> str:
    caption = html.escape(_caption(key))
    return (f'<figure><img src="{_data_uri(path)}" alt="{html.escape(key)}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _md_figure(key: str, path: Path) -> str:
    return f"![{_md_escape(key)}]({quote(Path(path).name)})\n\n_{_md_escape(_caption(key))}_"


@dataclass
class _Headline:
    sentences: list[tuple[str, str]]  # (text, css class or "")


def _headline(metrics: pd.DataFrame, baseline: Mapping[str, Any], target: float) -> _Headline:
    epoch, final = _final_value(metrics, HEADLINE_METRIC)
    raw = baseline.get(HEADLINE_METRIC)
    raw = None if _is_missing(raw) else float(raw)
    if final is None:
        return _Headline([("No validation precision@30 was recorded.", "missed")])
    parts = [(f"Final validation precision@30: {final:.3f} (epoch {epoch}).", "")]
    values = pd.to_numeric(metrics[HEADLINE_METRIC], errors="coerce")
    best_i = values.idxmax()
    best, best_epoch = float(values[best_i]), int(metrics.loc[best_i, "epoch"])
    if round(best, 3) > round(final, 3):
        parts.append((f"Best {best:.3f} at epoch {best_epoch}.", ""))
    if raw is not None:
        parts.append((f"Raw-pixel kNN: {raw:.3f} ({final - raw:+.3f}).",
                      "met" if final > raw else "missed"))
    if final >= target:
        parts.append((f"Course target {target:.2f}: met.", "met"))
    else:
        parts.append((f"Course target {target:.2f}: missed by {target - final:.3f}.", "missed"))
    return _Headline(parts)


def _html_headline(h: _Headline) -> str:
    spans = " ".join(f'<span class="{c}">{html.escape(t)}</span>' if c else html.escape(t)
                     for t, c in h.sentences)
    return f'<p class="headline">{spans}</p>'


def _md_headline(h: _Headline) -> str:
    return "**" + " ".join(_md_escape(t) for t, _ in h.sentences) + "**"


def _html_page(title: str, body: list[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body) + "\n</body>\n</html>\n"
    )


# ----------------------------------------------------------------------- one report


def render_report(experiment: str, metrics: pd.DataFrame, figures: Mapping[str, Path],
                  baseline: Mapping[str, Any], config: Mapping[str, Any],
                  stage_times: pd.DataFrame, notes: list[str] | None = None,
                  *, target: float = COURSE_TARGET, training: pd.DataFrame | None = None) -> tuple[str, str]:
    """Return ``(html, markdown)`` reporting one experiment.

    ``figures`` maps a short key (its caption is chosen from words such as
    "loss", "accuracy", "neighbors") to a PNG path; the HTML embeds the file,
    the Markdown links to its bare file name. Notes (collapse warnings and the
    like) are listed right under the headline so they are not missed.
    """
    title = f"Deep ranking report: {experiment}"
    head = _headline(metrics, baseline, target)
    acc = _accuracy_table(metrics)
    base = _baseline_table(metrics, baseline)
    times = _times_table(stage_times)
    conf = _config_table(config)
    epoch_secs = _train_epoch_seconds(stage_times)
    epoch_line = (f"{len(epoch_secs)} training epochs, mean {_fmt_duration(epoch_secs.mean())} "
                  f"per epoch." if len(epoch_secs) else "")
    notes = [str(n) for n in (notes or [])]

    h = [f"<h1>{html.escape(title)}</h1>", _html_headline(head)]
    m = [f"# {_md_escape(title)}", "", _md_headline(head), ""]
    if notes:
        h += ["<h2>Notes</h2>", '<ul class="notes">'
              + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"]
        m += ["## Notes", ""] + [f"- {_md_escape(n)}" for n in notes] + [""]
    h += ["<h2>Accuracy by epoch</h2>",
          '<p class="muted">Epoch 0 is the network before training; best value per '
          "column highlighted.</p>", _html_table(acc)]
    m += ["## Accuracy by epoch", "",
          "Epoch 0 is the network before training; best value per column in bold.", "",
          _md_table(acc), ""]
    if training is not None and len(training):
        train = _training_table(training)
        what = ("Images forwarded and triplets in the loss per epoch; a batch-structured list forwards each "
                "distinct image of a batch once for all of its triplets.")
        h += ["<h2>Training by epoch</h2>", f'<p class="muted">{html.escape(what)}</p>', _html_table(train)]
        m += ["## Training by epoch", "", _md_escape(what), "", _md_table(train), ""]
    if figures:
        h += ["<h2>Figures</h2>"] + [_html_figure(k, Path(p)) for k, p in figures.items()]
        m += ["## Figures", ""] + [_md_figure(k, Path(p)) + "\n" for k, p in figures.items()]
    h += ["<h2>Raw-pixel baseline</h2>",
          '<p class="muted">kNN on raw pixels, same queries and metrics.</p>',
          _html_table(base)]
    m += ["## Raw-pixel baseline", "", "kNN on raw pixels, same queries and metrics.", "",
          _md_table(base), ""]
    h += ["<h2>Time per stage</h2>", _html_table(times)]
    m += ["## Time per stage", "", _md_table(times), ""]
    if epoch_line:
        h.append(f"<p>{html.escape(epoch_line)}</p>")
        m += [_md_escape(epoch_line), ""]
    h += ["<h2>Resolved configuration</h2>", _html_table(conf)]
    m += ["## Resolved configuration", "", _md_table(conf), ""]
    return _html_page(title, h), "\n".join(m)


def _place_figures(out_dir: Path, figures: Mapping[str, Path]) -> dict[str, Path]:
    """Copy figures that live elsewhere into ``out_dir`` so Markdown links resolve."""
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


def write_report(out_dir: Path, experiment: str, metrics: pd.DataFrame,
                 figures: Mapping[str, Path], baseline: Mapping[str, Any],
                 config: Mapping[str, Any], stage_times: pd.DataFrame,
                 notes: list[str] | None = None, *,
                 target: float = COURSE_TARGET, training: pd.DataFrame | None = None) -> dict[str, Path]:
    """Write ``index.html`` and ``summary.md`` into ``out_dir`` atomically.

    Figures outside ``out_dir`` are copied in first. Returns
    ``{"html": ..., "markdown": ...}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    placed = _place_figures(out_dir, figures)
    page, summary = render_report(experiment, metrics, placed, baseline, config,
                                  stage_times, notes, target=target, training=training)
    paths = {"html": out_dir / HTML_NAME, "markdown": out_dir / MARKDOWN_NAME}
    write_text_atomic(paths["html"], page)
    write_text_atomic(paths["markdown"], summary)
    return paths


# ------------------------------------------------------------------------ comparison


def _by_epoch_table(experiments: Mapping[str, pd.DataFrame], metric: str) -> _Table:
    names = list(experiments)
    epochs = sorted({int(e) for t in experiments.values() for e in _sorted(t)["epoch"]})
    lookup = {
        n: (pd.to_numeric(t[metric], errors="coerce").groupby(t["epoch"].astype(int)).last()
            if metric in t.columns else pd.Series(dtype=float))
        for n, t in experiments.items()
    }
    table = _Table(header=["epoch"] + names, numeric=set(range(len(names) + 1)))
    for r, epoch in enumerate(epochs):
        values = [lookup[n].get(epoch) for n in names]
        table.rows.append([_epoch_label(epoch)] + [_fmt(v) for v in values])
        table.best.update((r, c + 1) for c in _best(values))
    return table


def _final_table(experiments: Mapping[str, pd.DataFrame]) -> _Table:
    columns = _metric_columns(experiments.values())
    table = _Table(header=["experiment", "final epoch"] + [metric_label(c) for c in columns],
                   numeric=set(range(1, len(columns) + 2)))
    finals = {}
    for name, t in experiments.items():
        t = _sorted(t)
        finals[name] = t.iloc[-1] if len(t) else pd.Series(dtype=float)
        epoch = str(int(finals[name]["epoch"])) if len(t) else "n/a"
        table.rows.append([name, epoch] + [_fmt(finals[name].get(c)) for c in columns])
    for j, c in enumerate(columns, start=2):
        _mark_best(table, j, [pd.to_numeric(finals[n].get(c), errors="coerce")
                              for n in experiments])
    return table


def _compare_times_table(names: list[str], times: Mapping[str, pd.DataFrame]) -> _Table:
    table = _Table(header=["experiment", "training epochs", "mean s / TrainEpoch",
                           "training total", "pipeline total"], numeric={1, 2, 3, 4})
    means = []
    for name in names:
        stages = times.get(name)
        if stages is None:
            table.rows.append([name, "n/a", "n/a", "n/a", "n/a"])
            means.append(None)
            continue
        epochs = _train_epoch_seconds(stages)
        mean = float(epochs.mean()) if len(epochs) else None
        means.append(mean)
        table.rows.append([name, str(len(epochs)), _fmt(mean, 1),
                           _fmt_duration(epochs.sum()) if len(epochs) else "n/a",
                           _fmt_duration(_stage_seconds(stages)["seconds"].sum())])
    _mark_best(table, 2, means, higher=False)  # faster is better
    return table


def render_compare(experiments: Mapping[str, pd.DataFrame],
                   times: Mapping[str, pd.DataFrame], figure: Path) -> tuple[str, str]:
    """Return ``(html, markdown)`` comparing experiments side by side.

    ``experiments`` maps a name to its metrics table, ``times`` a name to its
    stage times (names missing from either show "n/a"); ``figure`` is the
    comparison plot, embedded in the HTML and linked by file name in Markdown.
    """
    names = list(experiments) + [n for n in times if n not in experiments]
    all_experiments = {n: experiments.get(n, pd.DataFrame({"epoch": []})) for n in names}
    title = "Deep ranking: experiment comparison"
    by_epoch = _by_epoch_table(all_experiments, HEADLINE_METRIC)
    finals = _final_table(all_experiments)
    timing = _compare_times_table(names, times)

    h = [f"<h1>{html.escape(title)}</h1>",
         f"<p>{len(names)} experiments: {html.escape(', '.join(names))}.</p>",
         _html_figure("comparison", Path(figure)),
         "<h2>Validation precision@30 by epoch</h2>",
         '<p class="muted">Best experiment per epoch highlighted.</p>', _html_table(by_epoch),
         "<h2>Final-epoch metrics</h2>", _html_table(finals),
         "<h2>Training time</h2>", _html_table(timing)]
    m = [f"# {_md_escape(title)}", "",
         f"{len(names)} experiments: {_md_escape(', '.join(names))}.", "",
         _md_figure("comparison", Path(figure)), "",
         "## Validation precision@30 by epoch", "",
         "Best experiment per epoch in bold.", "", _md_table(by_epoch), "",
         "## Final-epoch metrics", "", _md_table(finals), "",
         "## Training time", "", _md_table(timing), ""]
    return _html_page(title, h), "\n".join(m)


def write_compare(out_dir: Path, experiments: Mapping[str, pd.DataFrame],
                  times: Mapping[str, pd.DataFrame], figure: Path) -> dict[str, Path]:
    """Write the comparison ``index.html`` and ``summary.md`` into ``out_dir``.

    Returns ``{"html": ..., "markdown": ...}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    placed = _place_figures(out_dir, {"comparison": Path(figure)})["comparison"]
    page, summary = render_compare(experiments, times, placed)
    paths = {"html": out_dir / HTML_NAME, "markdown": out_dir / MARKDOWN_NAME}
    write_text_atomic(paths["html"], page)
    write_text_atomic(paths["markdown"], summary)
    return paths
