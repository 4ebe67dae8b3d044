"""Raw-pixel kNN on the dataset: the baseline the learned embedding must beat.

    luigi --module tasks PixelBaseline --local-scheduler

Writes ``baselines/<dataset>-k<k>-px<max_size>-seed<seed>.json`` with the same
metric keys as ValidateEpoch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import luigi

from pipeline import paths
from pipeline.atomic import write_text_atomic
from pipeline.data.pixel_store import open_store, read_index
from pipeline.evaluation.baseline import BaselineSettings, pixel_embeddings
from pipeline.evaluation.evaluate import ValidationSettings, evaluate
from pipeline.evaluation.metric_names import precision_key
from tasks.config import RunSeed, artifacts
from tasks.index_dataset import IndexDataset
from tasks.output_writing import log, single_writer
from tasks.parameters import settings_parameters


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
        started = time.perf_counter()
        ds = Path(self.input().path)
        store, index = open_store(ds), read_index(ds, ["image_id", "split", "label"])
        train = pixel_embeddings(store, index, "train", self.max_size)
        val = pixel_embeddings(store, index, "val", self.max_size)
        metrics, _, _ = evaluate(train, val, ValidationSettings(k=self.k, seed=self.seed, knn_backend=self.knn_backend))
        metrics = {**metrics, "max_size": self.max_size, "seconds": round(time.perf_counter() - started, 3)}
        write_text_atomic(self.output().path, json.dumps(metrics, indent=2))
        log.info("raw-pixel baseline: precision@%d val %.4f", self.k, metrics[precision_key(self.k, "val")])
