"""Raw-pixel kNN on the dataset: the baseline the learned embedding must beat.

    luigi --module tasks PixelBaseline --local-scheduler

Writes ``baselines/<dataset>-k<k>-px<max_size>-seed<seed>.json`` with the same
metric keys as ValidateEpoch (always by exact search). ``[dask] address`` searches
the query blocks on a dask cluster, with the same numbers.
"""

from __future__ import annotations

import luigi

from pipeline import paths
from pipeline.dask_cluster import dask_client
from pipeline.evaluation.metric_names import precision_key
from pipeline.evaluation.settings import BaselineSettings, ValidationSettings
from tasks.config import RunSeed, artifacts
from tasks.config import dask as dask_section
from tasks.index_dataset import IndexDataset
from tasks.output_writing import log, single_writer
from tasks.parameters import settings_of, settings_parameters


@settings_parameters(BaselineSettings)
@settings_parameters(ValidationSettings, only=("k", "knn_backend"))
class PixelBaseline(RunSeed, luigi.Task):
    """precision@k (and the other metrics) with raw pixels as embeddings (Report passes [ValidateEpoch] k)."""

    def requires(self) -> IndexDataset:
        return IndexDataset()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(paths.baseline_file(artifacts().root, IndexDataset().key, self.k,
                                                         self.max_size, self.seed)))

    @single_writer
    def run(self) -> None:
        from pipeline.evaluation.baseline import pixel_baseline

        with dask_client(dask_section().settings().address) as client:
            metrics = pixel_baseline(self.input().path, self.output().path, settings_of(self, BaselineSettings),
                                     ValidationSettings(k=self.k, seed=self.seed, knn_backend=self.knn_backend),
                                     client)
        log.info("raw-pixel baseline: precision@%d val %.4f", self.k, metrics[precision_key(self.k, "val")])
