"""The label audit of one epoch: suspect training labels, duplicates (and leakage
from validation into training) and outliers, from the saved embeddings of this
epoch and of earlier ones, spread back to epoch 1 (``[AuditEpoch] epochs``).

    luigi --module tasks AuditEpoch --epoch 5 --local-scheduler
    python -m pipeline.show audit --epoch 5

Writes ``audit/epoch=NNN/`` (``images.parquet``, ``duplicates.parquet``,
``summary.json``); see :mod:`pipeline.audit`. Settings: ``[AuditEpoch]``; the given
labels are those the experiment trains on (``[run] label_noise``).
"""

from __future__ import annotations

import luigi

from pipeline import paths
from pipeline.audit.settings import AuditSettings, audit_is_current, pooled_epochs
from pipeline.settings import significant
from tasks.config import RunSeed, artifacts, experiment_param, run
from tasks.epoch import EmbedEpoch
from tasks.index_dataset import IndexDataset
from tasks.output_writing import log, single_writer, temporary_dir
from tasks.parameters import settings_of, settings_parameters


@settings_parameters(AuditSettings)
class AuditEpoch(RunSeed, luigi.Task):
    """Audit the training labels with epoch N's embeddings and those of ``epochs - 1`` earlier epochs."""

    experiment = experiment_param()
    epoch = luigi.IntParameter(description="the epoch whose embeddings (and those before it) are audited")

    def settings(self) -> AuditSettings:
        return settings_of(self, AuditSettings)

    def requires(self) -> dict:
        self.settings().check()
        run().settings().noise()
        pooled = pooled_epochs(self.epoch, self.settings().epochs)
        return {"index": IndexDataset(),
                "embeddings": [EmbedEpoch(experiment=self.experiment, epoch=e) for e in pooled]}

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(paths.audit_dir(artifacts().root, self.experiment, self.epoch)))

    def recorded_settings(self) -> dict:
        return {**significant(self.settings()), "seed": self.seed, **run().settings().recorded_noise()}

    def complete(self) -> bool:
        """Complete only if the audit was made with the current settings (else it is redone)."""
        return audit_is_current(self.output().path, self.recorded_settings())

    @single_writer
    def run(self) -> None:
        from pipeline.audit.folder import audit_epoch

        with temporary_dir(self.output()) as tmp:
            summary = audit_epoch(self.input()["index"].path, [t.path for t in self.input()["embeddings"]], tmp,
                                  self.settings(), noise=run().settings().noise(), seed=self.seed,
                                  recorded=self.recorded_settings())
        log.info("audit of epoch %d: %d suspect labels of %d, %d exact and %d near duplicates, %d leaked "
                 "into validation, in %.1fs", self.epoch, summary["suspects"], summary["images"],
                 summary["exact_duplicates"], summary["near_duplicates"], summary["leakage"], summary["seconds"])
