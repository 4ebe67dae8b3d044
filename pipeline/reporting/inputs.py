"""Gathering a report's inputs from saved artifacts: metric JSONs, step logs,
neighbour lists and the seconds each stage recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.pixel_store import gather
from pipeline.training.loop import collapsed_tail


def metric_values(record: dict) -> dict:
    """Just the metrics of a metrics/baseline JSON (drops counts, timings and settings)."""
    return {k: v for k, v in record.items()
            if k == "epoch" or (k.endswith(("_val", "_train")) and not k.startswith("queries_"))}


def metrics_table(files: list[Path]) -> pd.DataFrame:
    """One row per epoch from ``metrics/epoch=NNN.json`` files."""
    rows = [metric_values(json.loads(Path(f).read_text())) for f in files]
    return pd.DataFrame(rows).sort_values("epoch").reset_index(drop=True)


def step_logs(files: list[Path]) -> pd.DataFrame:
    """All epochs' per-step logs concatenated."""
    frames = [pd.read_parquet(f) for f in files]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def training_summary(steps: pd.DataFrame) -> pd.DataFrame:
    """Per epoch from the step logs: steps, images forwarded, triplets, triplets per image,
    active share (of the triplets in the loss) and mean loss."""
    columns = ["epoch", "steps", "images", "triplets", "triplets_per_image", "active_share", "loss"]
    if not len(steps) or "images" not in steps.columns:  # step logs of earlier versions lack the counts
        return pd.DataFrame(columns=columns)
    active = steps["active_fraction"] * steps["triplets"]
    out = steps.assign(active=active).groupby("epoch").agg(
        steps=("step", "size"), images=("images", "sum"), triplets=("triplets", "sum"), active=("active", "sum"),
        loss=("loss", "mean")).reset_index()
    out["triplets_per_image"] = out["triplets"] / out["images"]
    out["active_share"] = out["active"] / out["triplets"]
    return out[columns]


def collapse_notes(steps: pd.DataFrame) -> list[str]:
    """A note for every epoch whose last tenth of steps was flagged as collapsed."""
    notes = []
    for epoch, part in steps.groupby("epoch") if len(steps) else []:
        tail = collapsed_tail(part)
        if tail is not None:
            notes.append(f"epoch {epoch}: embedding collapse (mean distance {tail['mean_distance'].mean():.2e}, "
                         f"loss {tail['loss'].mean():.3f}); the network maps images to nearly one point")
    return notes


def neighbor_grid_inputs(neighbors: pd.DataFrame, kind: str, store: np.ndarray, index: pd.DataFrame) -> dict:
    """Images, class names and distances of the figure queries' ``kind`` neighbours
    (``nearest`` or ``farthest``), in the argument order of ``plot_neighbor_grid``."""
    part = neighbors[neighbors["kind"] == kind].sort_values(["query_id", "rank"])
    queries = part["query_id"].unique()
    k = int(part["rank"].max()) + 1
    names = index.set_index("image_id")["class_name"]
    ids = part["image_id"].to_numpy()
    return {
        "query_images": gather(store, queries),
        "query_names": [str(names[q]) for q in queries],
        "neighbor_images": gather(store, ids).reshape(len(queries), k, *store.shape[1:]),
        "neighbor_names": [[str(names[i]) for i in row] for row in ids.reshape(len(queries), k)],
        "distances": part["distance"].to_numpy().reshape(len(queries), k),
    }


def stage_times(entries: list[tuple[str, float | None]]) -> pd.DataFrame:
    """``(stage, seconds)`` pairs as the report's stage-time table (missing = skipped)."""
    return pd.DataFrame([(s, float(t)) for s, t in entries if t is not None], columns=["stage", "seconds"])
