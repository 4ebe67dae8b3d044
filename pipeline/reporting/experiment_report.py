"""An experiment's report folder, and the comparison of experiments, built from saved artifacts only."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from pipeline import paths
from pipeline.data.pixel_store import open_store, read_index
from pipeline.embedding.embed import read_manifest
from pipeline.evaluation.metric_names import precision_key
from pipeline.reporting.captions import ACCURACY, FARTHEST_NEIGHBORS, LOSS, NEAREST_NEIGHBORS
from pipeline.reporting.compare_page import write_compare
from pipeline.reporting.curves import plot_accuracy_by_epoch, plot_compare, plot_loss_by_epoch
from pipeline.reporting.failure_report import failure_report
from pipeline.reporting.image_grids import plot_neighbor_grid
from pipeline.reporting.inputs import (
    collapse_notes,
    metric_values,
    metrics_table,
    neighbor_grid_inputs,
    stage_times,
    step_logs,
    training_summary,
)
from pipeline.reporting.report_page import write_report
from pipeline.sampling.list_files import read_triplet_meta
from pipeline.training.epoch import epoch_seconds


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


def _json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def stage_seconds(inputs: ReportInputs) -> list[tuple[str, float | None]]:
    """``(stage, seconds)`` of every task behind the report, from what each recorded."""
    entries = [("IndexDataset", _json(inputs.dataset_dir / paths.DATASET_SUMMARY_FILE)["seconds"]),
               ("PixelBaseline", _json(inputs.baseline_file).get("seconds"))]
    for i, (metrics, train, emb) in enumerate(zip(inputs.metrics_files, inputs.train_dirs, inputs.embedding_dirs)):
        triplets = inputs.triplet_dirs[i]
        if i > 0 and triplets.is_dir():
            entries.append((f"TripletList({i})", read_triplet_meta(triplets).get("seconds")))
        entries.append((f"TrainEpoch({i})", epoch_seconds(train)))
        entries.append((f"EmbedEpoch({i})", read_manifest(emb).get("seconds")))
        entries.append((f"ValidateEpoch({i})", _json(metrics).get("seconds")))
    return entries


def build_report(out_dir: Path, experiment: str, inputs: ReportInputs, *, k: int) -> Path:
    """Draw the figures and write the pages into ``out_dir`` (a temporary folder the
    caller renames into place); returns the HTML page's name inside it."""
    started = time.perf_counter()
    metrics = metrics_table(list(inputs.metrics_files))
    steps = step_logs([Path(t) / paths.STEP_LOG_FILE for t in inputs.train_dirs])
    baseline = metric_values(_json(inputs.baseline_file))
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
    failure_figures, failures = failure_report(Path(inputs.metrics_files[-1]), store, index, out_dir, k=k,
                                               epoch=last_epoch)
    figures.update(failure_figures)
    times = stage_seconds(inputs) + [("Report", time.perf_counter() - started)]
    written = write_report(out_dir, experiment, metrics, figures, baseline, _json(inputs.config_file),
                           stage_times(times), collapse_notes(steps), k=k, training=training_summary(steps),
                           failures=failures)
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
            entries.append((f"ValidateEpoch({i})", _json(metrics).get("seconds")))
        times[name] = stage_times(entries)
    figure = plot_compare(tables, out_dir / "compare.png", k=k)
    written = write_compare(out_dir, tables, times, figure, k=k)
    return Path(written["html"].name)
