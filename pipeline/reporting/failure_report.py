"""The report's failure sections from one epoch's validation sidecars: the worst
queries' panel and table, precision per class, and the class-confusion heatmap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import paths
from pipeline.artifact_damage import corrupt_artifact, is_damage
from pipeline.reporting.captions import CONFUSION, WORST_QUERIES
from pipeline.reporting.confusion_map import plot_confusion
from pipeline.reporting.failure_inputs import class_names, confusion_shares, worst_grid_inputs, worst_queries
from pipeline.reporting.failure_tables import FailureTables, per_class_table, worst_queries_table
from pipeline.reporting.image_grids import plot_neighbor_grid

__all__ = ["failure_report"]


def _sidecar(metrics_file: Path, name: str) -> pd.DataFrame:
    path = paths.metrics_sidecar(metrics_file, name)
    try:
        return pd.read_parquet(path)
    except Exception as exc:
        if is_damage(exc):
            raise corrupt_artifact(path, str(exc)) from exc
        raise


def failure_report(metrics_file: Path, store: np.ndarray, index: pd.DataFrame, out_dir: Path, *,
                   k: int, epoch: int) -> tuple[dict[str, Path], FailureTables]:
    """Draw the worst-queries panel and the confusion heatmap of ``metrics_file``'s
    epoch into ``out_dir`` and build the failure tables.

    ``store`` is the dataset's pixel store and ``index`` its index (``image_id``,
    ``label``, ``class_name``). Returns the figures by caption key (no panel when
    every query is lone) and the tables.
    """
    metrics_file = Path(metrics_file)
    queries = _sidecar(metrics_file, "queries")
    labels, shares = confusion_shares(_sidecar(metrics_file, "confusion"))
    worst = worst_queries(queries)
    figures: dict[str, Path] = {}
    if len(worst):
        figures[WORST_QUERIES] = plot_neighbor_grid(
            **worst_grid_inputs(worst, store, index, k=k), out=out_dir / "worst_queries.png",
            title=f"The {len(worst)} validation queries with the lowest precision@{k} (epoch {epoch})")
    names = class_names(index)
    figures[CONFUSION] = plot_confusion(
        shares, [names.get(label, str(label)) for label in labels], out_dir / "confusion.png",
        title=f"Classes among the {k} nearest training images, per validation class (epoch {epoch})")
    tables = FailureTables(epoch, worst_queries_table(worst, index, k=k),
                           per_class_table(_sidecar(metrics_file, "per_class"), index, labels, shares, k=k))
    return figures, tables
