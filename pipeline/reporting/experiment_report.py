"""An experiment's report folder, and the comparison of experiments, built from saved artifacts only."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline import paths
from pipeline.audit.epoch import read_audit, top_suspects
from pipeline.data.pixel_store import open_store, read_index
from pipeline.embedding.embed import load_embeddings
from pipeline.evaluation.metric_names import precision_key
from pipeline.reporting.embedding_map import MARKED_QUERIES, map_epochs, project_2d
from pipeline.reporting.figures import (
    EMBEDDING_MAP,
    plot_embedding_maps,
    ACCURACY,
    CONFUSION,
    CROSS_SPLIT_DUPLICATES,
    FARTHEST_NEIGHBORS,
    LABEL_QUALITY,
    LOSS,
    NEAREST_NEIGHBORS,
    SUSPECT_LABELS,
    WORST_QUERIES,
    plot_accuracy_by_epoch,
    plot_compare,
    plot_confusion,
    plot_label_quality,
    plot_loss_by_epoch,
    plot_neighbor_grid,
)
from pipeline.reporting.inputs import (
    SUSPECT_ROWS,
    ReportInputs,
    collapse_notes,
    confusion_shares,
    duplicate_grid_inputs,
    metric_values,
    metrics_table,
    neighbor_grid_inputs,
    read_json,
    read_sidecar,
    stage_entries,
    stage_times,
    step_logs,
    suspect_grid_inputs,
    training_summary,
    worst_grid_inputs,
    worst_queries,
)
from pipeline.reporting.pages import write_compare, write_report
from pipeline.reporting.tables import (
    AuditTables,
    FailureTables,
    audit_summary_table,
    class_names,
    per_class_table,
    suspects_table,
    worst_queries_table,
)
from pipeline.training.epoch import epoch_seconds

__all__ = ["audit_report", "build_comparison", "build_report", "failure_report"]


def failure_report(metrics_file: Path, store: np.ndarray, index: pd.DataFrame, out_dir: Path, *,
                   k: int, epoch: int) -> tuple[dict[str, Path], FailureTables]:
    """Draw the worst-queries panel and the confusion heatmap of ``metrics_file``'s
    epoch into ``out_dir`` and build the failure tables, from that epoch's validation sidecars.

    ``store`` is the dataset's pixel store and ``index`` its index (``image_id``,
    ``label``, ``class_name``). Returns the figures by caption key (no panel when
    every query is lone) and the tables.
    """
    metrics_file = Path(metrics_file)
    queries = read_sidecar(metrics_file, "queries")
    labels, shares = confusion_shares(read_sidecar(metrics_file, "confusion"))
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
                           per_class_table(read_sidecar(metrics_file, "per_class"), index, labels, shares, k=k))
    return figures, tables


def audit_report(audit_file: Path, embeddings_dir: Path, store: np.ndarray, index: pd.DataFrame, out_dir: Path,
                 *, epoch: int) -> tuple[dict[str, Path], AuditTables]:
    """Draw the label audit's panels (the least trusted suspects beside their nearest
    training images in ``embeddings_dir``, the validation images that duplicate training
    ones, the label-quality histogram) into ``out_dir`` and build its tables, from the
    audit of ``epoch`` (its summary JSON). Returns the figures by caption key and the tables."""
    summary, images, pairs = read_audit(audit_file)
    suspects = top_suspects(images, SUSPECT_ROWS)
    figures: dict[str, Path] = {}
    if len(suspects):
        figures[SUSPECT_LABELS] = plot_neighbor_grid(
            **suspect_grid_inputs(suspects, images, load_embeddings(embeddings_dir, "train"), store, index),
            out=out_dir / "suspect_labels.png",
            title=f"The {len(suspects)} training labels the audit trusts least (epoch {epoch}; "
                  f"{int(images['suspect'].sum())} suspects in all)")
    if pairs["leakage"].any():
        figures[CROSS_SPLIT_DUPLICATES] = plot_neighbor_grid(
            **duplicate_grid_inputs(pairs, store, index), out=out_dir / "cross_split_duplicates.png",
            title=f"Validation images that duplicate a training image ({int(pairs['leakage'].sum())} pairs)")
    figures[LABEL_QUALITY] = plot_label_quality(images, out_dir / "label_quality.png",
                                                title=f"Label quality of the training images (epoch {epoch})")
    return figures, AuditTables(epoch, audit_summary_table(summary), suspects_table(suspects, index))


def embedding_maps(inputs: ReportInputs, index: pd.DataFrame, out: Path) -> Path:
    """The validation embeddings of :func:`.embedding_map.map_epochs` side by side, projected
    by :func:`.embedding_map.project_2d`, with each epoch's worst queries marked."""
    maps = []
    for epoch in map_epochs(len(inputs.metrics_files) - 1):
        val = load_embeddings(inputs.embedding_dirs[epoch], "val")
        marked = min(MARKED_QUERIES, max(1, len(val.image_ids) // 20))
        worst = worst_queries(read_sidecar(Path(inputs.metrics_files[epoch]), "queries"), marked)
        maps.append((epoch, project_2d(val.vectors), val.labels, np.isin(val.image_ids, worst["image_id"])))
    names = index.drop_duplicates("label").set_index("label")["class_name"]
    return plot_embedding_maps(maps, {int(k): str(v) for k, v in names.items()}, out)


def build_report(out_dir: Path, experiment: str, inputs: ReportInputs, *, k: int) -> Path:
    """Draw the figures and write the pages into ``out_dir`` (a temporary folder the
    caller renames into place); returns the HTML page's name inside it."""
    started = time.perf_counter()
    metrics = metrics_table(list(inputs.metrics_files))
    steps = step_logs([Path(t) / paths.STEP_LOG_FILE for t in inputs.train_dirs])
    baseline = metric_values(read_json(inputs.baseline_file))
    store, index = open_store(inputs.dataset_dir), read_index(inputs.dataset_dir, ["image_id", "label", "class_name"])
    neighbors = pd.read_parquet(paths.metrics_sidecar(Path(inputs.metrics_files[-1]), "neighbors"))
    last_epoch = len(inputs.metrics_files) - 1
    figures = {
        LOSS: plot_loss_by_epoch(steps, out_dir / "loss.png"),
        ACCURACY: plot_accuracy_by_epoch(metrics, out_dir / "accuracy.png", baseline.get(precision_key(k, "val")),
                                         k=k),
    }
    for kind, key in (("nearest", NEAREST_NEIGHBORS), ("farthest", FARTHEST_NEIGHBORS)):
        figures[key] = plot_neighbor_grid(
            **neighbor_grid_inputs(neighbors, kind, store, index), out=out_dir / f"{kind}.png",
            title=f"{kind.capitalize()} training images to validation queries (epoch {last_epoch})")
    figures[EMBEDDING_MAP] = embedding_maps(inputs, index, out_dir / "embedding_map.png")
    failure_figures, failures = failure_report(Path(inputs.metrics_files[-1]), store, index, out_dir, k=k,
                                               epoch=last_epoch)
    figures.update(failure_figures)
    audit = None
    if inputs.audit_file is not None:
        audit_figures, audit = audit_report(Path(inputs.audit_file), Path(inputs.embedding_dirs[-1]), store, index,
                                            out_dir, epoch=last_epoch)
        figures.update(audit_figures)
    times = stage_entries(inputs) + [("Report", time.perf_counter() - started)]
    written = write_report(out_dir, experiment, metrics, figures, baseline, read_json(inputs.config_file),
                           stage_times(times), collapse_notes(steps), k=k, training=training_summary(steps),
                           failures=failures, audit=audit)
    return Path(written["html"].name)


def build_comparison(out_dir: Path, experiments: Mapping[str, tuple[Sequence[Path], Sequence[Path]]], *,
                     k: int) -> Path:
    """The side-by-side page of finished experiments, into ``out_dir`` (a temporary folder).

    ``experiments`` maps a name to its ``(metrics_files, train_dirs)`` for epochs
    0..N. Returns the HTML page's name.
    """
    tables, times = {}, {}
    for name, (metrics_files, train_dirs) in experiments.items():
        tables[name] = metrics_table(list(metrics_files))
        entries: list[tuple[str, float | None]] = []
        for i, (metrics, train) in enumerate(zip(metrics_files, train_dirs)):
            if i > 0:
                entries.append((f"TrainEpoch({i})", epoch_seconds(train)))
            entries.append((f"ValidateEpoch({i})", read_json(metrics).get("seconds")))
        times[name] = stage_times(entries)
    figure = plot_compare(tables, out_dir / "compare.png", k=k)
    written = write_compare(out_dir, tables, times, figure, k=k)
    return Path(written["html"].name)
