"""The whole job: index, sample, train, embed, validate and report.

    luigi --module tasks RunAll --local-scheduler
    luigi --module tasks RunAll --experiment other --epochs 8 --local-scheduler

Reruns pick up where the last run stopped: finished epochs are not redone.
"""

from __future__ import annotations

from pathlib import Path

import luigi

from pipeline import paths
from tasks.config import epochs_param, experiment_param
from tasks.report import Report


class RunAll(luigi.WrapperTask):
    """Everything for epochs 1..``epochs`` of the configured experiment."""

    experiment = experiment_param()
    epochs = epochs_param()

    def requires(self) -> Report:
        return Report(experiment=self.experiment, epochs=self.epochs)

    def run(self) -> None:
        report = Path(self.input().path) / paths.REPORT_HTML
        print(f"\nReport: {report.resolve()}\n")
