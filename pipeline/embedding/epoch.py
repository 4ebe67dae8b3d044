"""Embed every image of a dataset with one epoch's checkpoint and write the shards:
in this process, or shard by shard on a dask cluster (:mod:`pipeline.embedding.sharded`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.checkpoint import load_checkpoint
from pipeline.data.pixel_store import open_store, read_index
from pipeline.device import ComputeSettings, start_compute
from pipeline.embedding.embed import embed_images, write_shards
from pipeline.embedding.settings import EmbedSettings
from pipeline.embedding.sharded import ShardJob, embed_on_cluster
from pipeline.network import ModelSettings, network_from_checkpoint

if TYPE_CHECKING:
    from distributed import Client


def embed_epoch(checkpoint: str | Path, dataset_dir: str | Path, out_dir: str | Path, expected: ModelSettings,
                settings: EmbedSettings, *, epoch: int, compute: ComputeSettings, what: str,
                client: Client | None = None) -> int:
    """Embed every train and validation image of ``dataset_dir`` with the network in ``checkpoint``
    (eval mode, no augmentation) into ``out_dir``; returns the number of images.

    ``expected`` is the current ``[model]``; a checkpoint of another shape is
    refused, naming ``what`` (e.g. "epoch 3 of experiment 'demo'"). Without
    ``client`` the network runs in this process on ``compute``'s device; with one,
    shards of the index run on its workers, each resolving ``compute`` on its own
    machine (so this process never touches CUDA), and the folder written is the
    same (bit-identical vectors on the CPU; only the manifest's ``seconds`` differ).
    """
    started = time.perf_counter()
    index = read_index(dataset_dir, columns=["image_id", "split", "label"])
    ids = index["image_id"].to_numpy()
    if client is None:
        device = start_compute(compute)
        net = network_from_checkpoint(load_checkpoint(checkpoint), expected, device, what)
        vectors = embed_images(net, open_store(dataset_dir), ids, batch_size=settings.batch_size, device=device)
    else:
        open_store(dataset_dir)  # a missing or damaged store fails here, naming it, before any task is sent
        job = ShardJob(checkpoint=str(Path(checkpoint).resolve()), dataset_dir=str(Path(dataset_dir).resolve()),
                       expected=expected, batch_size=settings.batch_size, compute=compute, what=what)
        vectors = embed_on_cluster(job, ids, client, shard_images=settings.dask_shard_images,
                                   resources=settings.resources())
    write_shards(out_dir, index, vectors, epoch=epoch, rows_per_shard=settings.rows_per_shard,
                 extra={"seconds": round(time.perf_counter() - started, 3)})
    return len(index)
