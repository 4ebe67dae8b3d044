"""Side-by-side comparison of experiments that have already run.

    luigi --module tasks Compare --experiments '["uniform","semihard"]' --epochs 5 --local-scheduler

Reads each experiment's ``metrics/`` and ``train/`` artifacts (run each one
first with its own settings, e.g. ``RunAll --experiment semihard
--TripletList-strategy semihard``) and writes ``compare/<a>--<b>/``.
"""

from __future__ import annotations

from pathlib import Path

import luigi

from pipeline import paths
from pipeline.evaluation.settings import ValidationSettings
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
        from pipeline.reporting.experiment_report import build_comparison

        experiments = {name: ([Path(o["metrics"].path) for o in outs], [Path(o["train"].path) for o in outs])
                       for name, outs in self.input().items()}
        with temporary_dir(self.output()) as tmp:
            page = build_comparison(tmp, experiments, k=self.k)
        log.info("comparison: %s", Path(self.output().path) / page)
