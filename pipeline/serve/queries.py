"""Validation queries of one epoch, worst first, from the per-query file that
``ValidateEpoch`` writes beside the epoch's metrics (``metrics/queries/epoch-NNN.parquet``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline import paths
from pipeline.storage import reading

COLUMNS = ["image_id", "label", "precision", "neighbors"]


@dataclass(frozen=True)
class ValidationQueries:
    """Every validation query of an epoch, lowest precision first (ties by image id)."""

    rows: pd.DataFrame  # COLUMNS
    k: int | None  # the k of the precision, when the metrics JSON records it
    path: Path

    @property
    def mean(self) -> float:
        return float(self.rows["precision"].mean()) if len(self.rows) else float("nan")


def queries_file(root: str | Path, experiment: str, epoch: int) -> Path:
    """``<experiment>/metrics/queries/epoch-NNN.parquet``."""
    return paths.metrics_sidecar(paths.metrics_file(root, experiment, epoch), "queries")


def validate_command(experiment: str, epoch: int) -> str:
    """The command that writes an epoch's metrics and per-query file."""
    return f"luigi --module tasks ValidateEpoch --experiment {experiment} --epoch {epoch} --local-scheduler"


def load_queries(root: str | Path, experiment: str, epoch: int) -> ValidationQueries | None:
    """The epoch's validation queries sorted worst first, or None when the file does not exist.

    Raises :class:`~pipeline.errors.CorruptArtifactError` when it exists but is
    unreadable or lacks a column.
    """
    path = queries_file(root, experiment, epoch)
    if not path.is_file():
        return None
    with reading(path, f"unreadable, or without the columns {', '.join(COLUMNS)}", also=(KeyError,)):
        rows = pd.read_parquet(path, columns=COLUMNS)
    rows = rows.sort_values(["precision", "image_id"], kind="stable").reset_index(drop=True)
    return ValidationQueries(rows=rows, k=_recorded_k(paths.metrics_file(root, experiment, epoch)), path=path)


def _recorded_k(metrics: Path) -> int | None:
    """``settings.k`` of the metrics JSON (the k of each query's precision), if readable."""
    try:
        k = json.loads(metrics.read_text())["settings"]["k"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # only a label on the page: the page works without it
    return int(k) if isinstance(k, int) else None
