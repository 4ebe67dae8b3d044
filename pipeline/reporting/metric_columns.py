"""Which metric columns a report shows, in what order, and under which label.

Precision is measured at ``[ValidateEpoch] k`` neighbours, so the leading
columns are derived from ``k`` (:mod:`pipeline.evaluation.metric_names`) rather
than spelled out: a run with another ``k`` still leads with its own metric.
"""

from __future__ import annotations

import re
from typing import Iterable

import pandas as pd

from pipeline.evaluation.metric_names import precision_key

__all__ = ["metric_columns", "metric_label", "metric_order", "order_metrics"]

_SPLITS = frozenset({"val", "train", "test"})
_BASE_NAMES = {"map_at_r": "mAP@R", "r_precision": "R-precision",
               "triplet_precision": "triplet precision"}
# Always reported next to precision@k, whatever k is.
_FIXED_K = (1, 10)
_RANK_METRICS = ("r_precision_val", "map_at_r_val", "triplet_precision_val")


def metric_label(column: str) -> str:
    """Human-readable name of a metric column, e.g. ``precision@30 (val)``."""
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
