"""An index over one epoch's embeddings, for similar-image search.

    luigi --module tasks SearchIndex --epoch 14 --local-scheduler

Writes ``search/epoch-NNN/`` (``index.faiss``, ``items.parquet``, ``meta.json``)
from the epoch's embedding shards. Query it with ``python -m pipeline.search
--epoch 14 IMAGE...`` or the page of ``python -m pipeline.serve``. Settings:
``[SearchIndex] splits`` (``train``, or ``train+val``).
"""

from __future__ import annotations

import luigi

from pipeline import paths
from pipeline.search.settings import SearchIndexSettings
from tasks.config import artifacts, experiment_param
from tasks.epoch import EmbedEpoch
from tasks.index_dataset import IndexDataset
from tasks.output_writing import log, single_writer, temporary_dir
from tasks.parameters import settings_of, settings_parameters


@settings_parameters(SearchIndexSettings)
class SearchIndex(luigi.Task):
    """Epoch N's embeddings as a faiss index, with what the search page needs to show each hit."""

    experiment = experiment_param()
    epoch = luigi.IntParameter(description="the trained epoch whose embeddings are indexed")

    def requires(self) -> dict[str, luigi.Task]:
        return {"index": IndexDataset(), "embeddings": EmbedEpoch(experiment=self.experiment, epoch=self.epoch)}

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(paths.search_dir(artifacts().root, self.experiment, self.epoch)))

    @single_writer
    def run(self) -> None:
        from pipeline.search.index import build_search_index

        dataset = IndexDataset().settings()
        with temporary_dir(self.output()) as tmp:
            meta = build_search_index(self.input()["embeddings"].path, self.input()["index"].path, tmp,
                                      settings_of(self, SearchIndexSettings), epoch=self.epoch,
                                      experiment=self.experiment, dataset_root=dataset.root or None)
        log.info("search index for epoch %d: %d images", self.epoch, meta["count"])
