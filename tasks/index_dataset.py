"""Index a dataset: the Parquet index and the packed pixel store.

    luigi --module tasks IndexDataset --local-scheduler

Settings come from ``[dataset]`` in luigi.cfg (source, root, name, stored_size,
on_bad_image, dask_scheduler); ``[dask] address`` (``--dask-address local:2``)
decodes on a dask.distributed cluster instead. The output folder is shared by
every experiment on that dataset.
"""

from __future__ import annotations

import luigi

from pipeline import paths
from pipeline.dask_cluster import dask_client, parse_address
from pipeline.data.settings import IndexSettings
from tasks.config import artifacts
from tasks.config import dask as dask_section
from tasks.output_writing import log, single_writer, temporary_dir
from tasks.parameters import settings_of, settings_parameters


@settings_parameters(IndexSettings, section="dataset")
class IndexDataset(luigi.Task):
    """Decode every image once into ``<root>/datasets/<name>-<size>px/``."""

    def settings(self) -> IndexSettings:
        return settings_of(self, IndexSettings)

    @property
    def key(self) -> str:
        """The dataset's folder name: ``<name or source>-<stored size>px``."""
        return self.settings().key()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(paths.dataset_dir(artifacts().root, self.key)))

    @single_writer
    def run(self) -> None:
        from pipeline.data.indexing import build_index, format_summary

        settings, address = self.settings(), dask_section().settings().address
        parse_address(address)  # a malformed address is refused even where no cluster is needed
        # Array sources (Fashion-MNIST) decode nothing: no cluster to start for them. The
        # cluster is entered first, so an unreachable one fails before any output folder exists.
        with dask_client(address if settings.decodes_files() else "") as client, \
                temporary_dir(self.output()) as tmp:
            summary = build_index(settings, tmp, client)
        log.info(format_summary(summary))
        print(format_summary(summary))
