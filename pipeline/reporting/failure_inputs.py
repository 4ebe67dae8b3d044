"""What the report's failure sections show, from validation's sidecars: the worst
queries, their thumbnails, and the class-confusion shares.

Inputs are the tables of ``metrics/epoch=NNN.{queries,confusion}.parquet``
(see :mod:`pipeline.evaluation.breakdown`) and the dataset index
(``image_id``, ``label``, ``class_name``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.data.pixel_store import gather

__all__ = ["WORST_QUERIES", "class_names", "confusion_shares", "neighbor_labels", "worst_grid_inputs",
           "worst_queries"]

# Rows of the worst-queries panel: enough to see a pattern, few enough to look at each.
WORST_QUERIES = 8


def worst_queries(queries: pd.DataFrame, n: int = WORST_QUERIES) -> pd.DataFrame:
    """The ``n`` validation queries with the lowest precision, ties broken by image id.

    Lone queries (NaN precision: their class has no training image) are left
    out: nothing could be found for them, so they show no failure of the embedding.
    """
    measured = queries[queries["precision"].notna()]
    return measured.sort_values(["precision", "image_id"], kind="stable").head(n).reset_index(drop=True)


def class_names(index: pd.DataFrame) -> pd.Series:
    """Class name by label, from the dataset index."""
    return index.drop_duplicates("label").set_index("label")["class_name"].astype(str).sort_index()


def neighbor_labels(worst: pd.DataFrame, index: pd.DataFrame) -> list[np.ndarray]:
    """The labels of each worst query's listed neighbours, nearest first."""
    label_of = index.set_index("image_id")["label"]
    return [label_of.loc[np.asarray(ids, dtype=np.int64)].to_numpy() for ids in worst["neighbors"]]


def worst_grid_inputs(worst: pd.DataFrame, store: np.ndarray, index: pd.DataFrame, *, k: int) -> dict:
    """Arguments of :func:`~pipeline.reporting.image_grids.plot_neighbor_grid` for the
    worst queries: their images and neighbours' images, class names, and a note
    per query with its precision@k and image id (no distances: the sidecar has none)."""
    names = class_names(index)
    rows = [np.asarray(ids, dtype=np.int64) for ids in worst["neighbors"]]
    shown = min((len(r) for r in rows), default=0)  # every row has figure_k ids, unless the database was smaller
    ids = np.stack([r[:shown] for r in rows]) if rows else np.zeros((0, 0), dtype=np.int64)
    labels = [row[:shown] for row in neighbor_labels(worst, index)]
    return {
        "query_images": gather(store, worst["image_id"].to_numpy(np.int64)),
        "query_names": [names[label] for label in worst["label"]],
        "neighbor_images": gather(store, ids.reshape(-1)).reshape(len(worst), shown, *store.shape[1:]),
        "neighbor_names": [[names[label] for label in row] for row in labels],
        "distances": None,
        "query_notes": [f"p@{k} {p:.2f} · #{i}" for p, i in zip(worst["precision"], worst["image_id"])],
    }


def confusion_shares(confusion: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, shares)``: every label among queries or neighbours, sorted, and the
    ``(C, C)`` share of each query class's neighbours (row) in each class (column).

    Rows sum to 1; a class that only appears among neighbours (no validation
    image) has a row of NaN.
    """
    labels = np.union1d(confusion["query_label"].to_numpy(), confusion["neighbor_label"].to_numpy())
    counts = np.zeros((len(labels), len(labels)))
    rows = np.searchsorted(labels, confusion["query_label"].to_numpy())
    cols = np.searchsorted(labels, confusion["neighbor_label"].to_numpy())
    np.add.at(counts, (rows, cols), confusion["count"].to_numpy(dtype=float))
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return labels, np.where(totals > 0, counts / totals, np.nan)
