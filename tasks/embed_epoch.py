"""Embed every train and validation image with one epoch's checkpoint.

    luigi --module tasks EmbedEpoch --epoch 2 --local-scheduler

Writes ``embeddings/epoch=NNN/`` (Parquet shards + manifest.json). Epoch 0
embeds the untrained (or pretrained) network: the accuracy-by-epoch baseline.
Load a split with ``pipeline.embedding.embed.load_embeddings(folder, "val")``.
"""

from __future__ import annotations

import time
from pathlib import Path

import luigi
import torch

from models.embedding_net import ModelSettings, build_model
from pipeline import paths
from pipeline.data.pixel_store import read_index
from pipeline.training.checkpoint import load_checkpoint
from pipeline.device import resolve_device
from pipeline.errors import ConfigError
from pipeline.embedding.embed import embed_images, write_shards
from pipeline.data.pixel_store import open_store
from tasks.base import log, single_writer, temporary_dir
from tasks.config import artifacts, compute, experiment_param, model
from tasks.index_dataset import IndexDataset
from tasks.train_epoch import CHECKPOINT, TrainEpoch


class EmbedEpoch(luigi.Task):
    """Vectors of every image under epoch N's network (eval mode, no augmentation)."""

    experiment = experiment_param()
    epoch = luigi.IntParameter()
    batch_size = luigi.IntParameter(default=512, significant=False)
    rows_per_shard = luigi.IntParameter(default=50_000, significant=False)

    resources = {"gpu": 1}

    def requires(self) -> dict[str, luigi.Task]:
        return {"index": IndexDataset(), "train": TrainEpoch(experiment=self.experiment, epoch=self.epoch)}

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(paths.embeddings_dir(artifacts().root, self.experiment, self.epoch)))

    @single_writer
    def run(self) -> None:
        started = time.perf_counter()
        if compute().threads:
            torch.set_num_threads(compute().threads)
        device = resolve_device(compute().device)
        state = load_checkpoint(Path(self.input()["train"].path) / CHECKPOINT)
        settings = ModelSettings(**state["model_settings"])
        if settings != model().settings():
            raise ConfigError(
                f"[model] settings differ from those epoch {self.epoch} of experiment {self.experiment!r} was "
                f"trained with ({state['model_settings']}); restore them or use a new --experiment name"
            )
        net = build_model(settings)
        net.load_state_dict(state["model"])
        net = net.to(device, memory_format=torch.channels_last)
        index = read_index(self.input()["index"].path, columns=["image_id", "split", "label"])
        store = open_store(self.input()["index"].path)
        self.set_status_message(f"embedding {len(index)} images")
        vectors = embed_images(net, store, index["image_id"].to_numpy(), batch_size=self.batch_size, device=device)
        with temporary_dir(self.output()) as tmp:
            write_shards(tmp, index, vectors, rows_per_shard=self.rows_per_shard,
                         extra={"epoch": self.epoch, "seconds": round(time.perf_counter() - started, 3)})
        log.info("embedded %d images for epoch %d in %.1fs", len(index), self.epoch, time.perf_counter() - started)
