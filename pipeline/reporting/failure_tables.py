"""The report's tables of where the model fails: the worst validation queries and
precision@k per class, each class beside the class its neighbours are most
often taken from instead."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.reporting.failure_inputs import class_names, neighbor_labels
from pipeline.reporting.tables import Table, fmt, is_missing

__all__ = ["FailureTables", "per_class_table", "worst_queries_table"]


@dataclass(frozen=True)
class FailureTables:
    """The failure sections' tables, for the epoch whose sidecars they come from."""

    epoch: int
    worst: Table
    per_class: Table


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
    :func:`~pipeline.reporting.failure_inputs.confusion_shares`.
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
