"""The report's opening sentence: the final validation precision@k, set against
the raw-pixel baseline and, when the caller passes one, a target to reach.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import pandas as pd

from pipeline.evaluation.metric_names import precision_key
from pipeline.reporting.metric_tables import final_value
from pipeline.reporting.tables import is_missing

__all__ = ["Headline", "headline"]


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
