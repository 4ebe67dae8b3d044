"""The experiment's report: accuracy by epoch, figures, baseline, config, timings.

    luigi --module tasks Report --epochs 5 --local-scheduler

Writes ``report/epochs=NNN/`` with a self-contained ``index.html``, a Markdown
``summary.md`` and the PNG figures, from saved artifacts only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import luigi
import pandas as pd

from pipeline import paths
from pipeline.reporting import figures
from pipeline.embedding.embed import read_manifest
from pipeline.data.pixel_store import SUMMARY_FILE, open_store, read_index
from pipeline.reporting.report import write_report
from pipeline.reporting.inputs import (collapse_notes, metric_values, metrics_table, neighbor_grid_inputs, stage_times,
                                    step_logs, training_summary)
from pipeline.sampling.list_files import read_triplet_meta
from tasks.base import log, single_writer, temporary_dir
from tasks.config import artifacts, experiment_param
from tasks.embed_epoch import EmbedEpoch
from tasks.index_dataset import IndexDataset
from tasks.pixel_baseline import PixelBaseline
from tasks.train_epoch import STEPS, TrainEpoch, train_seconds
from tasks.triplet_list import TripletList
from tasks.validate_epoch import ValidateEpoch


class Report(luigi.Task):
    """HTML + Markdown report over epochs 0..``epochs`` of one experiment."""

    experiment = experiment_param()
    epochs = luigi.IntParameter(config_path=dict(section="run", name="epochs"))

    def requires(self) -> dict:
        e = range(self.epochs + 1)
        return {
            "index": IndexDataset(),
            "baseline": PixelBaseline(k=ValidateEpoch(experiment=self.experiment, epoch=0).k),
            "metrics": [ValidateEpoch(experiment=self.experiment, epoch=i) for i in e],
            "train": [TrainEpoch(experiment=self.experiment, epoch=i) for i in e],
            "embed": [EmbedEpoch(experiment=self.experiment, epoch=i) for i in e],
        }

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(paths.report_dir(artifacts().root, self.experiment, self.epochs)))

    def complete(self) -> bool:
        """Also stale when an epoch's metrics must be recomputed (changed [ValidateEpoch] settings).

        Changed training or sampling settings are refused here too: Luigi does not
        look below a complete task, so this is where a finished experiment sees them.
        """
        TrainEpoch(experiment=self.experiment, epoch=self.epochs).check_settings()
        if self.epochs > 0:
            TripletList(experiment=self.experiment, epoch=self.epochs).check_settings()
        return super().complete() and all(task.complete() for task in self.requires()["metrics"])

    def _stage_times(self) -> list[tuple[str, float | None]]:
        inp = self.input()
        root = artifacts().root
        entries = [("IndexDataset", json.loads((Path(inp["index"].path) / SUMMARY_FILE).read_text())["seconds"]),
                   ("PixelBaseline", json.loads(Path(inp["baseline"].path).read_text()).get("seconds"))]
        for i in range(self.epochs + 1):
            triplets = paths.triplets_dir(root, self.experiment, i)
            if i > 0 and triplets.is_dir():  # lists may have been deleted to save space
                entries.append((f"TripletList({i})", read_triplet_meta(triplets).get("seconds")))
            entries.append((f"TrainEpoch({i})", train_seconds(inp["train"][i].path)))
            entries.append((f"EmbedEpoch({i})", read_manifest(inp["embed"][i].path).get("seconds")))
            entries.append((f"ValidateEpoch({i})", json.loads(Path(inp["metrics"][i].path).read_text()).get("seconds")))
        return entries

    @single_writer
    def run(self) -> None:
        started = time.perf_counter()
        inp = self.input()
        metrics = metrics_table([Path(t.path) for t in inp["metrics"]])
        steps = step_logs([Path(t.path) / STEPS for t in inp["train"]])
        baseline = metric_values(json.loads(Path(inp["baseline"].path).read_text()))
        config = json.loads((paths.experiment_dir(artifacts().root, self.experiment) / "config.json").read_text())
        ds = Path(inp["index"].path)
        store, index = open_store(ds), read_index(ds, ["image_id", "class_name"])
        last = Path(inp["metrics"][-1].path)
        neighbors = pd.read_parquet(paths.metrics_sidecar(last, "neighbors"))
        with temporary_dir(self.output()) as tmp:
            figs = {
                "loss": figures.plot_loss_by_epoch(steps, tmp / "loss.png"),
                "accuracy": figures.plot_accuracy_by_epoch(metrics, tmp / "accuracy.png",
                                                           baseline.get("precision_at_30_val")),
            }
            for kind in ("nearest", "farthest"):
                figs[f"{kind} neighbors"] = figures.plot_neighbor_grid(
                    **neighbor_grid_inputs(neighbors, kind, store, index), out=tmp / f"{kind}.png",
                    title=f"{kind.capitalize()} training images to validation queries (epoch {self.epochs})")
            times = self._stage_times() + [("Report", time.perf_counter() - started)]
            written = write_report(tmp, self.experiment, metrics, figs, baseline, config, stage_times(times),
                                 collapse_notes(steps), training=training_summary(steps))
        final = Path(self.output().path) / written["html"].name
        log.info("report: %s", final)
