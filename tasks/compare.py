"""Side-by-side comparison of experiments that have already run.

    luigi --module tasks Compare --experiments '["uniform","semihard"]' --epochs 5 --local-scheduler

Reads each experiment's ``metrics/`` and ``train/`` artifacts (run each one
first with its own settings, e.g. ``RunAll --experiment semihard
--TripletList-strategy semihard``) and writes ``compare/<a>--<b>/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import luigi

from pipeline import paths
from pipeline.evaluation.evaluate import ValidationSettings
from pipeline.reporting import plot_compare, write_compare
from pipeline.reporting.inputs import metrics_table, stage_times
from pipeline.training.epoch import epoch_seconds
from tasks.config import artifacts, epochs_param
from tasks.output_writing import log, single_writer, temporary_dir


class ExperimentEpochOutputs(luigi.ExternalTask):
    """An epoch's saved metrics and checkpoint; made by RunAll of that experiment."""

    experiment = luigi.Parameter()
    epoch = luigi.IntParameter()

    def output(self) -> dict[str, luigi.LocalTarget]:
        root = artifacts().root
        return {"metrics": luigi.LocalTarget(str(paths.metrics_file(root, self.experiment, self.epoch))),
                "train": luigi.LocalTarget(str(paths.train_dir(root, self.experiment, self.epoch)))}


class Compare(luigi.Task):
    """precision@k by epoch, final metrics and time per epoch, side by side."""

    experiments = luigi.ListParameter(description='experiment names, e.g. \'["uniform","semihard"]\'')
    epochs = epochs_param()
    k = luigi.IntParameter(default=ValidationSettings.k, config_path=dict(section="ValidateEpoch", name="k"),
                           description="the precision@k compared (default: [ValidateEpoch] k)")

    def requires(self) -> dict[str, list[ExperimentEpochOutputs]]:
        return {e: [ExperimentEpochOutputs(experiment=e, epoch=i) for i in range(self.epochs + 1)]
                for e in self.experiments}

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(paths.compare_dir(artifacts().root, list(self.experiments), self.epochs)))

    @single_writer
    def run(self) -> None:
        tables, times = {}, {}
        for name, outs in self.input().items():
            tables[name] = metrics_table([Path(o["metrics"].path) for o in outs])
            entries = []
            for i, o in enumerate(outs):
                if i > 0:
                    entries.append((f"TrainEpoch({i})", epoch_seconds(o["train"].path)))
                entries.append((f"ValidateEpoch({i})", json.loads(Path(o["metrics"].path).read_text()).get("seconds")))
            times[name] = stage_times(entries)
        with temporary_dir(self.output()) as tmp:
            fig = plot_compare(tables, tmp / "compare.png", k=self.k)
            write_compare(tmp, tables, times, fig, k=self.k)
        log.info("comparison: %s", Path(self.output().path) / paths.REPORT_HTML)
