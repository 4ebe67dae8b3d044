"""Validate one epoch from its saved embedding shards (no network, no images).

    luigi --module tasks ValidateEpoch --epoch 3 --local-scheduler
    luigi --module tasks ValidateEpochs --epochs '[1,2,3]' --workers 3 --local-scheduler

Writes ``metrics/epoch-NNN.json`` (precision@k on validation and on a seeded
training sample, precision@1/@10, R-precision, MAP@R, triplet precision) and
four Parquet sidecars, each in its own folder so that it reads as one table across
epochs (``pd.read_parquet("artifacts/demo/metrics/queries")``):
``metrics/per_class/epoch-NNN.parquet``, ``metrics/neighbors/epoch-NNN.parquet``
(the figure queries' nearest and farthest training images), ``metrics/queries/epoch-NNN.parquet``
(every validation query's precision@k and nearest training images) and
``metrics/confusion/epoch-NNN.parquet`` (which classes appear among each class's
neighbours). The JSON is written last, so its presence means the epoch's
validation is complete.

``[dask] address`` (``--dask-address local:2``) searches the query blocks on a dask
cluster, with the same numbers. ``[ValidateEpoch] index = ivf`` (``nlist``,
``nprobe``) searches an approximate faiss IVF index instead of the exact one and
records its recall@k against exact search; changing these revalidates.
"""

from __future__ import annotations

import luigi

from pipeline import paths
from pipeline.dask_cluster import dask_client
from pipeline.evaluation.metric_names import precision_key
from pipeline.evaluation.settings import ValidationSettings, metrics_are_current
from pipeline.tracking import metric_scalars
from tasks.config import RunSeed, artifacts, experiment_param, run, tracking
from tasks.config import dask as dask_section
from tasks.epoch import EmbedEpoch
from tasks.output_writing import log, single_writer
from tasks.parameters import settings_of, settings_parameters


@settings_parameters(ValidationSettings)
class ValidateEpoch(RunSeed, luigi.Task):
    """Accuracy of epoch N's embedding on the validation split."""

    experiment = experiment_param()
    epoch = luigi.IntParameter()

    def requires(self) -> EmbedEpoch:
        return EmbedEpoch(experiment=self.experiment, epoch=self.epoch)

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(paths.metrics_file(artifacts().root, self.experiment, self.epoch)))

    def settings(self) -> ValidationSettings:
        return settings_of(self, ValidationSettings, seed=self.seed)

    def recorded_settings(self) -> dict:
        return {**self.settings().recorded(), "seed": self.seed, **run().settings().recorded_noise()}

    def complete(self) -> bool:
        """Complete only if the metrics were computed with the current settings."""
        return metrics_are_current(self.output().path, self.recorded_settings())

    @single_writer
    def run(self) -> None:
        from pipeline.evaluation.epoch_metrics import validate_epoch

        address = dask_section().settings().address
        with dask_client(address) as client:
            metrics = validate_epoch(self.input().path, self.output().path, self.settings(), epoch=self.epoch,
                                     recorded=self.recorded_settings(), noise=run().settings().noise(),
                                     client=client)
        with tracking().event_log(self.experiment, "metrics", self.epoch) as events:
            events.scalars(self.epoch, metric_scalars(metrics), "metrics/")
        log.info("epoch %d: precision@%d val %.4f, train %.4f%s", self.epoch, self.k,
                 metrics[precision_key(self.k, "val")], metrics[precision_key(self.k, "train")],
                 f" (searched on the dask cluster {address})" if address.strip() else "")


class ValidateEpochs(luigi.WrapperTask):
    """Validate several epochs; with ``--workers K`` they run in parallel."""

    experiment = experiment_param()
    epochs = luigi.ListParameter(description="epochs to validate, as JSON: '[1,2,3]'")

    def requires(self) -> list[ValidateEpoch]:
        return [ValidateEpoch(experiment=self.experiment, epoch=int(e)) for e in self.epochs]
