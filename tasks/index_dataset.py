"""Index a dataset: the Parquet index and the packed pixel store.

    luigi --module tasks IndexDataset --local-scheduler

Settings come from ``[dataset]`` in luigi.cfg (source, root, name, stored_size,
on_bad_image). The output folder is shared by every experiment on that dataset.
"""

from __future__ import annotations

import luigi

from pipeline import paths
from pipeline.data.indexing import NATIVE_SIZE, IndexSettings, build_index, format_summary
from tasks.base import log, single_writer, temporary_dir
from tasks.config import artifacts


def _ds(name: str) -> dict:
    return {"config_path": dict(section="dataset", name=name)}


class IndexDataset(luigi.Task):
    """Decode every image once into ``<root>/datasets/<name>-<size>px/``."""

    source = luigi.ChoiceParameter(choices=["embedded", "fashion-mnist", "tiny-imagenet", "image-folder"],
                                   default="embedded", **_ds("source"))
    root = luigi.Parameter(default="", description="dataset folder (not for embedded)", **_ds("root"))
    name = luigi.Parameter(default="", description="dataset folder name; default: the source", **_ds("name"))
    stored_size = luigi.IntParameter(default=0, description="stored image size; 0 = native", **_ds("stored_size"))
    on_bad_image = luigi.ChoiceParameter(choices=["fail", "skip"], default="fail", **_ds("on_bad_image"))
    scheduler = luigi.Parameter(default="threads", significant=False, description="dask scheduler for decoding",
                                **_ds("scheduler"))

    def settings(self) -> IndexSettings:
        return IndexSettings(source=self.source, root=self.root, stored_size=self.stored_size,
                             on_bad_image=self.on_bad_image, scheduler=self.scheduler)

    @property
    def key(self) -> str:
        size = self.stored_size or NATIVE_SIZE[self.source]
        return f"{paths.check_name(self.name or self.source, '[dataset] name')}-{size}px"

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(paths.dataset_dir(artifacts().root, self.key)))

    @single_writer
    def run(self) -> None:
        with temporary_dir(self.output()) as tmp:
            summary = build_index(self.settings(), tmp)
        log.info(format_summary(summary))
        print(format_summary(summary))
