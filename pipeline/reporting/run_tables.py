"""Tables of how an experiment ran rather than how well: images and triplets
per training epoch, seconds per stage, and the resolved configuration."""

from __future__ import annotations

import json
from typing import Any, Mapping

import pandas as pd

from pipeline.reporting.tables import Table, epoch_label, fmt, fmt_duration, is_missing, mark_best

__all__ = [
    "compare_times_table",
    "config_table",
    "stage_seconds",
    "times_table",
    "train_epoch_seconds",
    "training_table",
]


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
    """Per epoch: steps, images forwarded, triplets in the loss, triplets per image, active share, loss."""
    table = Table(header=["epoch", "steps", "images forwarded", "triplets", "triplets / image", "active share",
                          "mean loss"], numeric=set(range(7)))
    for row in training.itertuples(index=False):
        table.rows.append([epoch_label(row.epoch), str(row.steps), f"{row.images:,}", f"{row.triplets:,}",
                           fmt(row.triplets_per_image, 2), fmt(row.active_share, 3), fmt(row.loss, 4)])
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
