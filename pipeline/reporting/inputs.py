"""A report's inputs, read from saved artifacts and shaped for its figures and tables.

Metric JSONs, step logs, neighbour lists and the seconds each stage recorded,
and validation's failure sidecars ``metrics/{queries,confusion,per_class}/epoch-NNN.parquet``
(see :mod:`pipeline.evaluation.breakdown`): the worst queries, their
thumbnails and the class-confusion shares. ``index`` below is the dataset
index (``image_id``, ``label``, ``class_name``) and ``store`` its pixel store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from pipeline import paths
from pipeline.data.pixel_store import gather
from pipeline.embedding.embed import Embeddings, read_manifest
from pipeline.knn import knn_search
from pipeline.reporting.figures import short_label
from pipeline.reporting.tables import class_names, neighbor_labels
from pipeline.sampling.list_files import read_triplet_meta
from pipeline.storage import corrupt_artifact, is_damage
from pipeline.training.epoch import epoch_seconds
from pipeline.training.loop import collapsed_tail

__all__ = ["WORST_QUERY_ROWS", "ReportInputs", "collapse_notes", "confusion_shares", "duplicate_grid_inputs",
           "metric_values", "metrics_table", "neighbor_grid_inputs", "read_json", "read_sidecar", "stage_entries",
           "stage_times", "step_logs", "suspect_grid_inputs", "training_summary", "worst_grid_inputs",
           "worst_queries"]

# Rows of the worst-queries panel: enough to see a pattern, few enough to look at each.
WORST_QUERY_ROWS = 8
# The audit's panels: suspect rows, each beside this many neighbours, and cross-split pairs.
SUSPECT_ROWS = 8
SUSPECT_NEIGHBORS = 6
DUPLICATE_ROWS = 8


@dataclass(frozen=True)
class ReportInputs:
    """The artifacts a report reads: one entry per epoch 0..N in the per-epoch lists."""

    dataset_dir: Path
    baseline_file: Path
    config_file: Path
    metrics_files: Sequence[Path]
    train_dirs: Sequence[Path]
    embedding_dirs: Sequence[Path]
    triplet_dirs: Sequence[Path]  # epoch 0 has none; deleted lists (to save space) are skipped
    audit_file: Path | None = None  # the last epoch's label audit (none before training)


def read_json(path: Path) -> dict:
    """The JSON object saved at ``path``."""
    return json.loads(Path(path).read_text())


def metric_values(record: dict) -> dict:
    """Just the metrics of a metrics/baseline JSON (drops counts, timings and settings); with
    label noise, also those against the true labels (``<key>_true``)."""
    return {k: v for k, v in record.items()
            if k == "epoch" or (k.endswith(("_val", "_train", "_val_true", "_train_true"))
                                and not k.startswith("queries_"))}


def metrics_table(files: list[Path]) -> pd.DataFrame:
    """One row per epoch from ``metrics/epoch-NNN.json`` files."""
    rows = [metric_values(read_json(f)) for f in files]
    return pd.DataFrame(rows).sort_values("epoch").reset_index(drop=True)


def step_logs(files: list[Path]) -> pd.DataFrame:
    """All epochs' per-step logs concatenated."""
    frames = [pd.read_parquet(f) for f in files]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def training_summary(steps: pd.DataFrame) -> pd.DataFrame:
    """Per epoch from the step logs: steps, images forwarded, triplets, triplets per image,
    active share (of the triplets in the loss), mean loss, and mean loss over all triplets
    (NaN for step logs written before it was logged)."""
    columns = ["epoch", "steps", "images", "triplets", "triplets_per_image", "active_share", "loss", "loss_all"]
    if not len(steps) or "images" not in steps.columns:  # step logs of earlier versions lack the counts
        return pd.DataFrame(columns=columns)
    active = steps["active_fraction"] * steps["triplets"]
    everything = steps["loss_all"] if "loss_all" in steps.columns else np.nan
    out = steps.assign(active=active, loss_all=everything).groupby("epoch").agg(
        steps=("step", "size"), images=("images", "sum"), triplets=("triplets", "sum"), active=("active", "sum"),
        loss=("loss", "mean"), loss_all=("loss_all", "mean")).reset_index()
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


def stage_entries(inputs: ReportInputs) -> list[tuple[str, float | None]]:
    """``(stage, seconds)`` of every task behind the report, from what each recorded."""
    entries = [("IndexDataset", read_json(inputs.dataset_dir / paths.DATASET_SUMMARY_FILE)["seconds"]),
               ("PixelBaseline", read_json(inputs.baseline_file).get("seconds"))]
    for i, (metrics, train, emb) in enumerate(zip(inputs.metrics_files, inputs.train_dirs, inputs.embedding_dirs)):
        triplets = inputs.triplet_dirs[i]
        if i > 0 and triplets.is_dir():
            entries.append((f"TripletList({i})", read_triplet_meta(triplets).get("seconds")))
        entries.append((f"TrainEpoch({i})", epoch_seconds(train)))
        entries.append((f"EmbedEpoch({i})", read_manifest(emb).get("seconds")))
        entries.append((f"ValidateEpoch({i})", read_json(metrics).get("seconds")))
    if inputs.audit_file is not None:
        entries.append((f"AuditEpoch({len(inputs.metrics_files) - 1})",
                        read_json(Path(inputs.audit_file)).get("seconds")))
    return entries


def stage_times(entries: list[tuple[str, float | None]]) -> pd.DataFrame:
    """``(stage, seconds)`` pairs as the report's stage-time table (missing = skipped)."""
    return pd.DataFrame([(s, float(t)) for s, t in entries if t is not None], columns=["stage", "seconds"])


# ---------------------------------------------------------------------------- where the model fails


def read_sidecar(metrics_file: Path, name: str) -> pd.DataFrame:
    """The ``name`` sidecar of ``metrics_file``; damaged bytes raise :func:`~pipeline.storage.corrupt_artifact`."""
    path = paths.metrics_sidecar(Path(metrics_file), name)
    try:
        return pd.read_parquet(path)
    except Exception as exc:
        if is_damage(exc):
            raise corrupt_artifact(path, str(exc)) from exc
        raise


def worst_queries(queries: pd.DataFrame, n: int = WORST_QUERY_ROWS) -> pd.DataFrame:
    """The ``n`` validation queries with the lowest precision, ties broken by image id.

    Lone queries (NaN precision: their class has no training image) are left
    out: nothing could be found for them, so they show no failure of the embedding.
    """
    measured = queries[queries["precision"].notna()]
    return measured.sort_values(["precision", "image_id"], kind="stable").head(n).reset_index(drop=True)


def worst_grid_inputs(worst: pd.DataFrame, store: np.ndarray, index: pd.DataFrame, *, k: int) -> dict:
    """Arguments of :func:`~pipeline.reporting.figures.plot_neighbor_grid` for the
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


# ---------------------------------------------------------------------------- the label audit


def suspect_grid_inputs(suspects: pd.DataFrame, images: pd.DataFrame, train: Embeddings, store: np.ndarray,
                        index: pd.DataFrame, *, k: int = SUSPECT_NEIGHBORS) -> dict:
    """Arguments of :func:`~pipeline.reporting.figures.plot_neighbor_grid` for the
    ``suspects`` (rows of the audit's ``images``): each suspect under its given label with
    its suggested label and quality, beside its ``k`` nearest training images in
    ``train`` (the audited epoch's embeddings) under their given labels."""
    names = class_names(index)
    given = images.set_index("image_id")["given_label"]
    rows = np.searchsorted(train.image_ids, suspects["image_id"].to_numpy(np.int64))
    k = min(k, len(train.image_ids) - 1)
    if len(rows) == 0 or k < 1:
        ids = np.zeros((len(rows), 0), dtype=np.int64)
        distances = np.zeros((len(rows), 0))
    else:
        distances, found = knn_search(train.vectors[rows], train.vectors, k, exclude=rows)
        ids = train.image_ids[found]
    return {
        "query_images": gather(store, suspects["image_id"].to_numpy(np.int64)),
        "query_names": [names[label] for label in suspects["given_label"]],
        "neighbor_images": gather(store, ids.reshape(-1)).reshape(len(rows), ids.shape[1], *store.shape[1:]),
        "neighbor_names": [[names[given[i]] for i in row] for row in ids],
        "distances": distances,
        "query_notes": [f"→ {short_label(names[s], 12)} · q {q:.2f}"
                        for s, q in zip(suspects["suggested_label"], suspects["quality"])],
        "query_role": "given",
    }


def duplicate_grid_inputs(pairs: pd.DataFrame, store: np.ndarray, index: pd.DataFrame,
                          *, n: int = DUPLICATE_ROWS) -> dict:
    """Arguments of :func:`~pipeline.reporting.figures.plot_neighbor_grid` for the first
    ``n`` validation images that duplicate a training image (the audit's ``duplicates``
    rows with ``leakage``, exact ones first, then by distance): each beside the
    training image it duplicates, both under their dataset labels."""
    leaks = pairs[pairs["leakage"]].sort_values(["distance", "image_id"], kind="stable")
    leaks = leaks.drop_duplicates("image_id").head(n)
    label_of = index.set_index("image_id")["label"]
    names = class_names(index)
    val, train = leaks["image_id"].to_numpy(np.int64), leaks["duplicate_of"].to_numpy(np.int64)
    return {
        "query_images": gather(store, val),
        "query_names": [names[label_of[i]] for i in val],
        "neighbor_images": gather(store, train).reshape(len(train), 1, *store.shape[1:]),
        "neighbor_names": [[names[label_of[i]]] for i in train],
        "distances": leaks["distance"].to_numpy(dtype=float).reshape(-1, 1),
        "query_notes": [f"{kind} · #{i}" for kind, i in zip(leaks["kind"], val)],
        "query_role": "val",
    }
