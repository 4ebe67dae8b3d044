"""EmbedEpoch on a dask.distributed cluster: contiguous shards of the index, one task each.

Embedding needs no communication between images, so it is a data-parallel stage:
each shard's task gets image ids, reads the pixels from the memory-mapped store on
storage the workers share, embeds them with the network its worker loaded once
(:mod:`pipeline.embedding.worker_model`) and returns the vectors. Only ids and
vectors travel; the caller writes the shards, exactly as the in-process path does.

Every shard but the last holds a whole number of ``batch_size`` batches, so a
shard's forward passes are the in-process loop's batches, image for image: on the
CPU the vectors are bit-identical to the in-process run's (with the same torch
thread count: a dask worker's is 1, and ``[compute] threads`` sets it).

A shard may ask for worker resources (``[EmbedEpoch] dask_resources = GPU=1``):
only workers started with ``dask worker ADDRESS --resources GPU=1`` take it, and a
worker takes CUDA when it has it and ``[compute] device`` allows
(:func:`~pipeline.embedding.worker_model.worker_device`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pipeline.dask_cluster import check_resources
from pipeline.data.pixel_store import open_store
from pipeline.device import ComputeSettings
from pipeline.embedding.embed import embed_images
from pipeline.embedding.settings import RESOURCES_SETTING
from pipeline.embedding.worker_model import cached_network, worker_device
from pipeline.network import ModelSettings

if TYPE_CHECKING:
    from distributed import Client


@dataclass(frozen=True)
class ShardJob:
    """What every shard of one embedding run needs besides its ids (a few hundred bytes per task).

    Paths are absolute, so a worker started in another folder finds the same files.
    """

    checkpoint: str
    dataset_dir: str
    expected: ModelSettings
    batch_size: int
    compute: ComputeSettings
    what: str


def shard_ranges(n: int, shard_images: int, batch_size: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` row ranges covering ``n`` rows: about ``shard_images`` rows each, rounded
    up to whole batches of ``batch_size`` so that shards split no in-process batch."""
    rows = max(1, math.ceil(shard_images / batch_size)) * batch_size
    return [(lo, min(lo + rows, n)) for lo in range(0, n, rows)]


def embed_shard(job: ShardJob, image_ids: np.ndarray) -> np.ndarray:
    """Run on a worker: the float32 ``(len(image_ids), D)`` vectors of one shard."""
    from distributed import get_worker

    try:
        name = get_worker().name
    except ValueError:  # called outside a worker (a synchronous run): no worker index to spread GPUs by
        name = None
    device = worker_device(job.compute, name)
    net = cached_network(job.checkpoint, job.expected, device, job.what)
    return embed_images(net, open_store(job.dataset_dir), image_ids, batch_size=job.batch_size, device=device,
                        show_bar=False)


def embed_on_cluster(job: ShardJob, image_ids: np.ndarray, client: Client, *, shard_images: int,
                     resources: dict[str, float] | None = None) -> np.ndarray:
    """The vectors of ``image_ids`` (in that order), computed shard by shard on ``client``'s workers.

    ``resources`` (e.g. ``{"GPU": 1}``) restricts the shards to workers that offer
    them; a cluster where none does raises :class:`~pipeline.errors.ConfigError`
    naming ``[EmbedEpoch] dask_resources`` instead of waiting forever. A worker
    that dies mid-shard has its shard retried elsewhere (dask's
    ``allowed-failures``); a shard that fails for good raises here, before the
    caller has written anything.
    """
    check_resources(client, resources or {}, RESOURCES_SETTING)
    ids = np.asarray(image_ids, dtype=np.int64)
    futures = [client.submit(embed_shard, job, ids[lo:hi], resources=resources or None, pure=False)
               for lo, hi in shard_ranges(len(ids), shard_images, job.batch_size)]
    if not futures:
        return np.zeros((0, 0), np.float32)
    # Gathered in shard order: the rows come back as the index lists them.
    return np.concatenate(client.gather(futures))
