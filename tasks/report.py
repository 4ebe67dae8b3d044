"""The experiment's report: accuracy by epoch, figures, baseline, config, timings.

    luigi --module tasks Report --epochs 5 --local-scheduler

Writes ``report/epochs-NNN/`` with a self-contained ``index.html``, a Markdown
``summary.md`` and the PNG figures, from saved artifacts only. After training
(``--epochs`` 1 or more) it includes the label audit of the last epoch (AuditEpoch).
"""

from __future__ import annotations

import json
from pathlib import Path

import luigi

from pipeline import paths
from pipeline.storage import written_after
from pipeline.tracking import metric_scalars
from tasks.config import artifacts, epochs_param, experiment_param, tracking
from tasks.epoch import AuditEpoch, EmbedEpoch, TrainEpoch, TripletList
from tasks.index_dataset import IndexDataset
from tasks.output_writing import log, single_writer, temporary_dir
from tasks.pixel_baseline import PixelBaseline
from tasks.validate_epoch import ValidateEpoch


class Report(luigi.Task):
    """HTML + Markdown report over epochs 0..``epochs`` of one experiment."""

    experiment = experiment_param()
    epochs = epochs_param()

    def requires(self) -> dict:
        e = range(self.epochs + 1)
        needs = {
            "index": IndexDataset(),
            "baseline": PixelBaseline(k=ValidateEpoch(experiment=self.experiment, epoch=0).k),
            "metrics": [ValidateEpoch(experiment=self.experiment, epoch=i) for i in e],
            "train": [TrainEpoch(experiment=self.experiment, epoch=i) for i in e],
            "embed": [EmbedEpoch(experiment=self.experiment, epoch=i) for i in e],
        }
        if self.epochs > 0:  # the untrained network's neighbours say nothing about the labels
            needs["audit"] = AuditEpoch(experiment=self.experiment, epoch=self.epochs)
        return needs

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(paths.report_dir(artifacts().root, self.experiment, self.epochs)))

    def complete(self) -> bool:
        """Also stale when an epoch's metrics or the audit must be recomputed (changed
        [ValidateEpoch] or [AuditEpoch] settings), or were written after the report.

        Changed training or sampling settings are refused here too: Luigi does not
        look below a complete task, so this is where a finished experiment sees them.
        """
        TrainEpoch(experiment=self.experiment, epoch=self.epochs).check_settings()
        if self.epochs > 0:
            TripletList(experiment=self.experiment, epoch=self.epochs).check_settings()
        needs = self.requires()
        read = [needs["baseline"], *needs["metrics"], *([needs["audit"]] if "audit" in needs else [])]
        return (super().complete() and all(task.complete() for task in read)
                and written_after(Path(self.output().path) / paths.REPORT_HTML, [t.output().path for t in read]))

    @single_writer
    def run(self) -> None:
        from pipeline.reporting.experiment_report import build_report
        from pipeline.reporting.inputs import ReportInputs

        inp, root = self.input(), artifacts().root
        inputs = ReportInputs(
            dataset_dir=Path(inp["index"].path), baseline_file=Path(inp["baseline"].path),
            config_file=paths.config_file(root, self.experiment),
            metrics_files=[Path(t.path) for t in inp["metrics"]], train_dirs=[Path(t.path) for t in inp["train"]],
            embedding_dirs=[Path(t.path) for t in inp["embed"]],
            triplet_dirs=[paths.triplets_dir(root, self.experiment, i) for i in range(self.epochs + 1)],
            audit_file=Path(inp["audit"].path) if "audit" in inp else None)
        with temporary_dir(self.output()) as tmp:
            page = build_report(tmp, self.experiment, inputs, k=self.requires()["metrics"][0].k)
        # The raw-pixel baseline as a reference line beside the learned curves.
        with tracking().event_log(self.experiment, "baseline") as events:
            baseline = metric_scalars(json.loads(Path(inp["baseline"].path).read_text()))
            for epoch in range(self.epochs + 1):
                events.scalars(epoch, baseline, "baseline/")
        log.info("report: %s", Path(self.output().path) / page)
