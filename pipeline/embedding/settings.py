"""``[EmbedEpoch]`` settings, apart from the embedding code so that declaring task
parameters imports no torch."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.dask_cluster import parse_resources
from pipeline.settings import setting

RESOURCES_SETTING = "[EmbedEpoch] dask_resources"


@dataclass(frozen=True)
class EmbedSettings:
    """``[EmbedEpoch]``: how embedding runs (run-only: the vectors do not depend on it)."""

    batch_size: int = setting(512, "images per forward pass", run_only=True, minimum=1)
    rows_per_shard: int = setting(50_000, "rows per Parquet shard", run_only=True, minimum=1)
    dask_shard_images: int = setting(16_384, "with [dask] address: images per dask task (rounded up to whole "
                                     "batches)", run_only=True, minimum=1)
    dask_resources: str = setting("", "with [dask] address: worker resources each task needs, e.g. GPU=1 (workers "
                                  "started with `dask worker ADDRESS --resources GPU=1`); empty = any worker",
                                  run_only=True)

    def resources(self) -> dict[str, float]:
        """``dask_resources`` parsed (a malformed value raises a ConfigError naming it)."""
        return parse_resources(self.dask_resources, RESOURCES_SETTING)

