"""Tables of metric values: one experiment by epoch, against the raw-pixel
baseline, and several experiments side by side."""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from pipeline.reporting.metric_columns import metric_columns, metric_label, order_metrics
from pipeline.reporting.tables import Table, best_positions, epoch_label, fmt, is_missing, mark_best, signed

__all__ = ["accuracy_table", "baseline_table", "by_epoch_table", "final_table", "final_value", "sorted_by_epoch"]


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
