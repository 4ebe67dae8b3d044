"""Every table a report shows, and the numbers in them.

The :class:`Table` model is what both renderers of :mod:`.pages` draw, and every
cell value goes through the formatting helpers here exactly once, so the HTML
page and the Markdown summary can never disagree on a number, a "n/a" or a
highlight. Tables: metric values (one experiment by epoch, against the
raw-pixel baseline, several side by side), how a run went (training per epoch,
seconds per stage, the configuration), where the model fails (worst queries,
precision per class), and the headline sentence above them.

Precision is measured at ``[ValidateEpoch] k`` neighbours, so the leading
metric columns are derived from ``k`` (:mod:`pipeline.evaluation.metric_names`)
rather than spelled out: a run with another ``k`` still leads with its own metric.

The Tiny ImageNet course project this pipeline was built for asks for
precision@30 of at least 0.60, so 30 is also the default ``k`` of every report
function. The target means nothing on another dataset or at another ``k``: on
the embedded Fashion-MNIST sample raw pixels alone reach about 0.69, and
"target met" there would credit the network with what pixels already do.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline.evaluation.metric_names import precision_key

__all__ = ["COURSE_K", "COURSE_SOURCE", "COURSE_TARGET", "AuditTables", "FailureTables", "Headline", "Table",
           "accuracy_table", "audit_summary_table", "baseline_table", "best_positions", "by_epoch_table",
           "class_names", "compare_times_table", "config_table", "course_target_applies", "epoch_label", "final_table",
           "final_value", "fmt", "fmt_duration", "headline", "is_missing", "mark_best", "metric_columns",
           "metric_label", "metric_order", "neighbor_labels", "order_metrics", "per_class_table", "signed",
           "sorted_by_epoch", "stage_seconds", "suspects_table", "times_table", "train_epoch_seconds",
           "training_table", "worst_queries_table"]

COURSE_TARGET = 0.60
COURSE_K = 30
COURSE_SOURCE = "tiny-imagenet"


def course_target_applies(config: Mapping[str, Any], k: int) -> bool:
    """True when the experiment is the course's task: Tiny ImageNet, precision@30.

    ``config`` is the experiment's ``config.json``; one without a ``dataset``
    section (recorded before any training) is not known to be Tiny ImageNet.
    """
    dataset = config.get("dataset")
    source = dataset.get("source") if isinstance(dataset, Mapping) else None
    return source == COURSE_SOURCE and k == COURSE_K


# ---------------------------------------------------------------------------- the table model


@dataclass
class Table:
    """A table both renderers share; cells hold plain (unescaped) text.

    ``best`` holds ``(row, column)`` cells to highlight, ``numeric`` the columns
    to right-align, ``footer`` an optional totals row (always emphasised).
    """

    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    best: set[tuple[int, int]] = field(default_factory=set)
    numeric: set[int] = field(default_factory=set)
    footer: list[str] | None = None

    @property
    def empty(self) -> bool:
        """True when there is neither a row nor a footer to show."""
        return not self.rows and self.footer is None

    def cells(self, r: int | None) -> Iterator[tuple[str, bool, bool]]:
        """``(text, numeric, best)`` of each cell of row ``r``, or of the footer when ``r`` is None.

        The renderers differ only in how they style a cell, so which cells are
        numeric or best is decided here, once.
        """
        row = self.footer if r is None else self.rows[r]
        for c, text in enumerate(row or []):
            yield text, c in self.numeric, r is not None and (r, c) in self.best


def is_missing(value: Any) -> bool:
    """True for ``None`` and NaN; any other value, numeric or not, counts as present."""
    if value is None:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def fmt(value: Any, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals, or ``n/a`` when missing."""
    if is_missing(value):
        return "n/a"
    return f"{float(value):.{digits}f}"


def signed(value: float | None) -> str:
    """A difference with its sign and 3 decimals, or ``n/a``."""
    return "n/a" if value is None or is_missing(value) else f"{value:+.3f}"


def fmt_duration(seconds: float) -> str:
    """Seconds as a reader would say them: ``12.3 s``, ``4 min 05 s``, ``1 h 07 min``."""
    if is_missing(seconds):
        return "n/a"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def epoch_label(epoch: Any) -> str:
    """An epoch number as shown; epoch 0 is the network before any training."""
    epoch = int(epoch)
    return "0 (before training)" if epoch == 0 else str(epoch)


def best_positions(values: Sequence[Any], higher: bool = True) -> set[int]:
    """Positions of the best values; ties as displayed (3 decimals) all count."""
    shown = {i: round(float(v), 3) for i, v in enumerate(values) if not is_missing(v)}
    if len(shown) < 2:  # a lone value is trivially "best" and the colour would mislead
        return set()
    if len(set(shown.values())) == 1:  # all tied: nothing stands out
        return set()
    target = max(shown.values()) if higher else min(shown.values())
    return {i for i, v in shown.items() if v == target}


def mark_best(table: Table, column: int, values: Sequence[Any], higher: bool = True) -> None:
    """Highlight the best of ``values`` (one per row, in row order) in ``column``."""
    table.best.update((r, column) for r in best_positions(values, higher))


# ---------------------------------------------------------------------------- metric columns

_SPLITS = frozenset({"val", "train", "test"})
_BASE_NAMES = {"map_at_r": "mAP@R", "r_precision": "R-precision",
               "triplet_precision": "triplet precision"}
# Always reported next to precision@k, whatever k is.
_FIXED_K = (1, 10)
_RANK_METRICS = ("r_precision_val", "map_at_r_val", "triplet_precision_val")


def metric_label(column: str) -> str:
    """Human-readable name of a metric column, e.g. ``precision@30 (val)``; a ``<key>_true``
    column (an experiment with label noise, scored against the true labels) adds ``true labels``."""
    if str(column).endswith("_true"):
        return metric_label(str(column)[: -len("_true")]).replace(")", ", true labels)", 1)
    base, _, split = str(column).rpartition("_")
    if not base or split not in _SPLITS:
        base, split = str(column), ""
    name = _BASE_NAMES.get(base) or re.sub(r"_at_(\w+)", r"@\1", base).replace("_", " ")
    return f"{name} ({split})" if split else name


def metric_order(k: int) -> tuple[str, ...]:
    """Known metrics in the order a reader scans them: precision@k first, then the rest."""
    keys = [precision_key(k, "val"), precision_key(k, "train")]
    keys += [precision_key(j, "val") for j in _FIXED_K] + list(_RANK_METRICS)
    return tuple(dict.fromkeys(keys))  # k may be 1 or 10: keep its first place only


def order_metrics(keys: Iterable[str], k: int) -> list[str]:
    """``keys`` with the known metrics first, in :func:`metric_order`, the others as given."""
    keys = list(keys)
    known = [c for c in metric_order(k) if c in keys]
    return known + [c for c in keys if c not in known]


def metric_columns(frames: Iterable[pd.DataFrame], k: int) -> list[str]:
    """The metric columns of ``frames`` (all but ``epoch``), ordered by :func:`order_metrics`."""
    seen: list[str] = []
    for frame in frames:
        seen += [c for c in frame.columns if c != "epoch" and c not in seen]
    return order_metrics(seen, k)


# ---------------------------------------------------------------------------- metric tables


def sorted_by_epoch(metrics: pd.DataFrame) -> pd.DataFrame:
    """``metrics`` in epoch order; raises ``ValueError`` if it has no ``epoch`` column."""
    if "epoch" not in metrics.columns:
        raise ValueError(f"metrics table lacks an 'epoch' column; has {list(metrics.columns)}")
    return metrics.sort_values("epoch", kind="stable").reset_index(drop=True)


def final_value(metrics: pd.DataFrame, column: str) -> tuple[int | None, float | None]:
    """Last epoch with a value in ``column`` (metrics may skip some epochs)."""
    if column not in metrics.columns:
        return None, None
    table = sorted_by_epoch(metrics)
    valid = pd.to_numeric(table[column], errors="coerce").dropna()
    if valid.empty:
        return None, None
    return int(table.loc[valid.index[-1], "epoch"]), float(valid.iloc[-1])


def accuracy_table(metrics: pd.DataFrame, k: int) -> Table:
    """One row per epoch, one column per metric; the best of each column highlighted."""
    metrics = sorted_by_epoch(metrics)
    columns = metric_columns([metrics], k)
    table = Table(header=["epoch"] + [metric_label(c) for c in columns],
                  numeric=set(range(len(columns) + 1)))
    table.rows = [[epoch_label(row["epoch"])] + [fmt(row[c]) for c in columns]
                  for _, row in metrics.iterrows()]
    for j, c in enumerate(columns, start=1):
        mark_best(table, j, pd.to_numeric(metrics[c], errors="coerce").tolist())
    return table


def baseline_table(metrics: pd.DataFrame, baseline: Mapping[str, Any], k: int) -> Table:
    """Each baseline metric: raw-pixel kNN, the learned embedding's last value, the difference."""
    table = Table(header=["metric", "raw-pixel kNN", "learned (last epoch)", "difference"],
                  numeric={1, 2, 3})
    for key in order_metrics(baseline, k):
        raw = None if is_missing(baseline[key]) else float(baseline[key])
        _, learned = final_value(metrics, key)
        diff = learned - raw if learned is not None and raw is not None else None
        table.rows.append([metric_label(key), fmt(raw), fmt(learned), signed(diff)])
    return table


def by_epoch_table(experiments: Mapping[str, pd.DataFrame], metric: str) -> Table:
    """``metric`` by epoch, one column per experiment; the best per epoch highlighted."""
    names = list(experiments)
    epochs = sorted({int(e) for t in experiments.values() for e in sorted_by_epoch(t)["epoch"]})
    lookup = {
        n: (pd.to_numeric(t[metric], errors="coerce").groupby(t["epoch"].astype(int)).last()
            if metric in t.columns else pd.Series(dtype=float))
        for n, t in experiments.items()
    }
    table = Table(header=["epoch"] + names, numeric=set(range(len(names) + 1)))
    for r, epoch in enumerate(epochs):
        values = [lookup[n].get(epoch) for n in names]
        table.rows.append([epoch_label(epoch)] + [fmt(v) for v in values])
        table.best.update((r, c + 1) for c in best_positions(values))
    return table


def final_table(experiments: Mapping[str, pd.DataFrame], k: int) -> Table:
    """Each experiment's last epoch and its metrics; the best per metric highlighted."""
    columns = metric_columns(experiments.values(), k)
    table = Table(header=["experiment", "final epoch"] + [metric_label(c) for c in columns],
                  numeric=set(range(1, len(columns) + 2)))
    finals = {}
    for name, t in experiments.items():
        t = sorted_by_epoch(t)
        finals[name] = t.iloc[-1] if len(t) else pd.Series(dtype=float)
        epoch = str(int(finals[name]["epoch"])) if len(t) else "n/a"
        table.rows.append([name, epoch] + [fmt(finals[name].get(c)) for c in columns])
    for j, c in enumerate(columns, start=2):
        mark_best(table, j, [pd.to_numeric(finals[n].get(c), errors="coerce")
                             for n in experiments])
    return table


# ---------------------------------------------------------------------------- the headline


@dataclass
class Headline:
    """Sentences of the headline, each with a CSS class ("met", "missed" or "")."""

    sentences: list[tuple[str, str]]


def headline(metrics: pd.DataFrame, baseline: Mapping[str, Any], k: int,
             target: float | None) -> Headline:
    """Final and best validation precision@k, the baseline comparison, and ``target`` unless None."""
    key = precision_key(k, "val")
    epoch, final = final_value(metrics, key)
    raw = baseline.get(key)
    raw = None if is_missing(raw) else float(raw)
    if final is None:
        return Headline([(f"No validation precision@{k} was recorded.", "missed")])
    parts = [(f"Final validation precision@{k}: {final:.3f} (epoch {epoch}).", "")]
    values = pd.to_numeric(metrics[key], errors="coerce")
    best_i = values.idxmax()
    best, best_epoch = float(values[best_i]), int(metrics.loc[best_i, "epoch"])
    if round(best, 3) > round(final, 3):
        parts.append((f"Best {best:.3f} at epoch {best_epoch}.", ""))
    if raw is not None:
        parts.append((f"Raw-pixel kNN: {raw:.3f} ({final - raw:+.3f}).",
                      "met" if final > raw else "missed"))
    if target is None:
        return Headline(parts)
    if final >= target:
        parts.append((f"Course target {target:.2f}: met.", "met"))
    else:
        parts.append((f"Course target {target:.2f}: missed by {target - final:.3f}.", "missed"))
    return Headline(parts)


# ---------------------------------------------------------------------------- how the run went


def stage_seconds(stage_times: pd.DataFrame) -> pd.DataFrame:
    """``stage`` (text) and ``seconds`` (numeric, NaN when unreadable) of ``stage_times``."""
    if stage_times.empty and not len(stage_times.columns):
        stage_times = pd.DataFrame({"stage": [], "seconds": []})
    missing = {"stage", "seconds"} - set(stage_times.columns)
    if missing:
        raise ValueError(f"stage times lack column(s) {sorted(missing)}")
    out = stage_times[["stage", "seconds"]].copy()
    out["stage"] = out["stage"].astype(str).astype(object)  # .str needs object dtype when empty
    out["seconds"] = pd.to_numeric(out["seconds"], errors="coerce")
    return out


def train_epoch_seconds(stage_times: pd.DataFrame) -> pd.Series:
    """Seconds of the ``TrainEpoch(...)`` stages that recorded them."""
    times = stage_seconds(stage_times)
    mask = times["stage"].str.match(r"TrainEpoch\b")
    return times.loc[mask, "seconds"].dropna()


def times_table(stage_times: pd.DataFrame) -> Table:
    """Seconds, duration and share of the total per stage, with a totals footer."""
    times = stage_seconds(stage_times)
    total = float(times["seconds"].sum())
    table = Table(header=["stage", "seconds", "duration", "share"], numeric={1, 2, 3})
    for stage, secs in zip(times["stage"], times["seconds"]):
        share = f"{100 * secs / total:.1f} %" if total > 0 and not is_missing(secs) else "n/a"
        table.rows.append([stage, fmt(secs, 1), fmt_duration(secs), share])
    if table.rows:
        table.footer = ["total", fmt(total, 1), fmt_duration(total), "100 %"]
    return table


def compare_times_table(names: list[str], times: Mapping[str, pd.DataFrame]) -> Table:
    """Training epochs, mean seconds per epoch (fastest highlighted) and totals per experiment."""
    table = Table(header=["experiment", "training epochs", "mean s / TrainEpoch",
                          "training total", "pipeline total"], numeric={1, 2, 3, 4})
    means = []
    for name in names:
        stages = times.get(name)
        if stages is None:
            table.rows.append([name, "n/a", "n/a", "n/a", "n/a"])
            means.append(None)
            continue
        epochs = train_epoch_seconds(stages)
        mean = float(epochs.mean()) if len(epochs) else None
        means.append(mean)
        table.rows.append([name, str(len(epochs)), fmt(mean, 1),
                           fmt_duration(epochs.sum()) if len(epochs) else "n/a",
                           fmt_duration(stage_seconds(stages)["seconds"].sum())])
    mark_best(table, 2, means, higher=False)  # faster is better
    return table


def training_table(training: pd.DataFrame) -> Table:
    """Per epoch: steps, images forwarded, triplets in the loss, triplets per image, active share,
    the loss trained and the loss over all triplets."""
    table = Table(header=["epoch", "steps", "images forwarded", "triplets", "triplets / image", "active share",
                          "mean loss", "mean loss, all triplets"], numeric=set(range(8)))
    for row in training.itertuples(index=False):
        table.rows.append([epoch_label(row.epoch), str(row.steps), f"{row.images:,}", f"{row.triplets:,}",
                           fmt(row.triplets_per_image, 2), fmt(row.active_share, 3), fmt(row.loss, 4),
                           fmt(row.loss_all, 4)])
    return table


def _config_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def config_table(config: Mapping[str, Any]) -> Table:
    """One row per setting: its section (empty for top-level values), key and value."""
    rows = []
    for section, body in config.items():
        if isinstance(body, Mapping):
            rows += [[str(section), str(k), _config_value(v)] for k, v in body.items()]
        else:
            rows.append(["", str(section), _config_value(body)])
    return Table(header=["section", "key", "value"], rows=rows)


# ---------------------------------------------------------------------------- where the model fails
# ``index`` below is the dataset index (``image_id``, ``label``, ``class_name``).


@dataclass(frozen=True)
class FailureTables:
    """The failure sections' tables, for the epoch whose sidecars they come from."""

    epoch: int
    worst: Table
    per_class: Table


def class_names(index: pd.DataFrame) -> pd.Series:
    """Class name by label, from the dataset index."""
    return index.drop_duplicates("label").set_index("label")["class_name"].astype(str).sort_index()


def neighbor_labels(worst: pd.DataFrame, index: pd.DataFrame) -> list[np.ndarray]:
    """The labels of each worst query's listed neighbours, nearest first."""
    label_of = index.set_index("image_id")["label"]
    return [label_of.loc[np.asarray(ids, dtype=np.int64)].to_numpy() for ids in worst["neighbors"]]


def _percent(share: float) -> str:
    return f"{100 * share:.1f} %"


def _most_confused(label: int, labels: np.ndarray, shares: np.ndarray, names: pd.Series) -> str:
    """The other class with the largest share of ``label``'s neighbours, and that share."""
    pos = np.searchsorted(labels, label)
    if pos >= len(labels) or labels[pos] != label:
        return "n/a"
    row = shares[pos].copy()
    row[pos] = np.nan
    if not np.isfinite(row).any() or np.nanmax(row) <= 0:
        return "none"
    j = int(np.nanargmax(row))  # the smallest label among equal shares
    return f"{names.get(labels[j], str(labels[j]))} ({_percent(row[j])})"


def per_class_table(per_class: pd.DataFrame, index: pd.DataFrame, labels: np.ndarray, shares: np.ndarray,
                    *, k: int) -> Table:
    """One row per validation class, worst precision@k first (ties by label; classes
    without a training image, NaN, last): name, queries, precision@k, most confused with.

    ``per_class`` is the ``per_class`` sidecar (``label``, ``n_queries``,
    ``precision_at_<k>``); ``labels``/``shares`` come from
    :func:`~pipeline.reporting.inputs.confusion_shares`.
    """
    column = f"precision_at_{k}"
    names = class_names(index)
    ordered = per_class.sort_values([column, "label"], na_position="last", kind="stable")
    table = Table(header=["class", "queries", f"precision@{k}", f"most confused with (share of {k} nearest)"],
                  numeric={1, 2})
    for row in ordered.itertuples(index=False):
        label = int(row.label)
        precision = getattr(row, column)
        table.rows.append([names.get(label, str(label)), str(int(row.n_queries)), fmt(precision),
                           "n/a" if is_missing(precision) else _most_confused(label, labels, shares, names)])
    return table


def worst_queries_table(worst: pd.DataFrame, index: pd.DataFrame, *, k: int) -> Table:
    """One row per worst query (in the panel's order): its image id, class,
    precision@k, how many of its listed neighbours share its class, and the other
    class most frequent among them (ties: the one met first, nearest first)."""
    names = class_names(index)
    shown = min((len(ids) for ids in worst["neighbors"]), default=0)
    table = Table(header=["#", "image id", "class", f"precision@{k}", f"own class in top {shown}",
                          f"most frequent other class in top {shown}"], numeric={0, 1, 3, 4})
    for rank, (row, found) in enumerate(zip(worst.itertuples(index=False), neighbor_labels(worst, index)), start=1):
        found = found[:shown]
        others = Counter(int(label) for label in found if label != row.label).most_common(1)
        other = f"{names.get(others[0][0], str(others[0][0]))} ({others[0][1]}/{shown})" if others else "none"
        table.rows.append([str(rank), str(int(row.image_id)), names.get(int(row.label), str(row.label)),
                           fmt(row.precision), f"{int((found == row.label).sum())}/{shown}", other])
    return table


# ---------------------------------------------------------------------------- the label audit


@dataclass(frozen=True)
class AuditTables:
    """The audit section's tables, for the epoch whose audit they come from."""

    epoch: int
    summary: Table
    suspects: Table


def audit_summary_table(summary: Mapping[str, Any]) -> Table:
    """The audit's counts (``audit/epoch-NNN.json``) and, when labels were flipped, how well its
    suspects find them."""
    table = Table(header=["finding", "value"], numeric={1})
    rows = [("training images audited", summary["images"]),
            ("epochs pooled (k nearest: " + str(summary["k"]) + ")", summary["epochs_pooled"]),
            ("suspect labels", summary["suspects"]),
            ("exact duplicate pairs", summary["exact_duplicates"]),
            (f"near duplicate pairs (embedding distance <= {summary['near_duplicate_distance']:.3g})",
             summary["near_duplicates"]),
            ("validation images duplicating a training image (leakage)", summary["leakage"]),
            ("outliers (mean neighbour distance over 2x the median)", summary["outliers_over_2x"])]
    if "flipped" in summary:
        rows.append(("labels flipped for this experiment", summary["flipped"]))
    table.rows += [[name, str(int(value))] for name, value in rows]
    for key, value in summary.get("detection", {}).items():
        label = "AUROC" if key == "auroc" else key
        table.rows.append([f"suspects against the flipped labels: {label}", fmt(value)])
    return table


def suspects_table(suspects: pd.DataFrame, index: pd.DataFrame) -> Table:
    """One row per shown suspect (``images.parquet`` rows, in the figure's order): image id,
    given and suggested class, label quality and outlier score (and whether it was flipped)."""
    names = class_names(index)
    flipped = "flipped" in suspects.columns
    table = Table(header=["#", "image id", "given label", "suggested label", "label quality", "outlier score"]
                  + (["flipped"] if flipped else []), numeric={0, 1, 4, 5})
    for rank, row in enumerate(suspects.itertuples(index=False), start=1):
        cells = [str(rank), str(int(row.image_id)), names.get(int(row.given_label), str(row.given_label)),
                 names.get(int(row.suggested_label), str(row.suggested_label)), fmt(row.quality),
                 fmt(row.outlier_score, 2)]
        table.rows.append(cells + (["yes" if row.flipped else "no"] if flipped else []))
    return table
