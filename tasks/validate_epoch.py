"""Validate one epoch from its saved embedding shards (no network, no images).

    luigi --module tasks ValidateEpoch --epoch 3 --local-scheduler
    luigi --module tasks ValidateEpochs --epochs '[1,2,3]' --workers 3 --local-scheduler

Writes ``metrics/epoch=NNN.json`` (precision@k on validation and on a seeded
training sample, precision@1/@10, R-precision, MAP@R, triplet precision) beside
``epoch=NNN.per_class.parquet`` and ``epoch=NNN.neighbors.parquet`` (the figure
queries' nearest and farthest training images). The JSON is written last, so
its presence means the epoch's validation is complete.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import luigi
import pandas as pd

from pipeline import paths
from pipeline.atomic import atomic_path, write_text_atomic
from pipeline.embedding.embed import load_embeddings
from pipeline.evaluation.evaluate import ValidationSettings, evaluate
from pipeline.evaluation.metric_names import precision_key
from pipeline.settings import significant
from tasks.config import RunSeed, artifacts, experiment_param
from tasks.epoch import EmbedEpoch
from tasks.output_writing import log, single_writer
from tasks.parameters import settings_of, settings_parameters


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


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
        return {**significant(self.settings()), "seed": self.seed}

    def complete(self) -> bool:
        """Complete only if the metrics were computed with the current settings,
        so changing ``[ValidateEpoch] k`` revalidates instead of reusing old numbers."""
        path = Path(self.output().path)
        if not path.is_file():
            return False
        try:
            return json.loads(path.read_text()).get("settings") == self.recorded_settings()
        except (OSError, ValueError):
            return False

    @single_writer
    def run(self) -> None:
        started = time.perf_counter()
        emb_dir = self.input().path
        settings = self.settings()
        metrics, per_class, neighbors = evaluate(load_embeddings(emb_dir, "train"), load_embeddings(emb_dir, "val"),
                                                 settings)
        out = Path(self.output().path)
        _write_parquet(per_class, paths.metrics_sidecar(out, "per_class"))
        _write_parquet(neighbors, paths.metrics_sidecar(out, "neighbors"))
        metrics = {"epoch": self.epoch, **metrics, "settings": self.recorded_settings(),
                   "seconds": round(time.perf_counter() - started, 3)}
        write_text_atomic(out, json.dumps(metrics, indent=2))
        log.info("epoch %d: precision@%d val %.4f, train %.4f", self.epoch, self.k,
                 metrics[precision_key(self.k, "val")], metrics[precision_key(self.k, "train")])


class ValidateEpochs(luigi.WrapperTask):
    """Validate several epochs; with ``--workers K`` they run in parallel."""

    experiment = experiment_param()
    epochs = luigi.ListParameter(description="epochs to validate, as JSON: '[1,2,3]'")

    def requires(self) -> list[ValidateEpoch]:
        return [ValidateEpoch(experiment=self.experiment, epoch=int(e)) for e in self.epochs]
