"""Embed every image of a dataset with one epoch's checkpoint and write the shards."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from models.embedding_net import ModelSettings, network_from_checkpoint
from pipeline.checkpoint import load_checkpoint
from pipeline.data.pixel_store import open_store, read_index
from pipeline.embedding.embed import embed_images, write_shards
from pipeline.settings import setting


@dataclass(frozen=True)
class EmbedSettings:
    """``[EmbedEpoch]``: how embedding runs (run-only: the vectors do not depend on it)."""

    batch_size: int = setting(512, "images per forward pass", run_only=True, minimum=1)
    rows_per_shard: int = setting(50_000, "rows per Parquet shard", run_only=True, minimum=1)


def embed_epoch(checkpoint: str | Path, dataset_dir: str | Path, out_dir: str | Path, expected: ModelSettings,
                settings: EmbedSettings, *, epoch: int, device: torch.device, what: str) -> int:
    """Embed every train and validation image of ``dataset_dir`` with the network in ``checkpoint``
    (eval mode, no augmentation) into ``out_dir``; returns the number of images.

    ``expected`` is the current ``[model]``; a checkpoint of another shape is
    refused, naming ``what`` (e.g. "epoch 3 of experiment 'demo'").
    """
    started = time.perf_counter()
    net = network_from_checkpoint(load_checkpoint(checkpoint), expected, device, what)
    index = read_index(dataset_dir, columns=["image_id", "split", "label"])
    vectors = embed_images(net, open_store(dataset_dir), index["image_id"].to_numpy(), batch_size=settings.batch_size,
                           device=device)
    write_shards(out_dir, index, vectors, rows_per_shard=settings.rows_per_shard,
                 extra={"epoch": epoch, "seconds": round(time.perf_counter() - started, 3)})
    return len(index)
