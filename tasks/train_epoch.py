"""Train one epoch of the triplet network (epoch 0 saves the initial network).

    luigi --module tasks TrainEpoch --epoch 2 --local-scheduler

Settings: ``[TrainEpoch]`` (optimiser, lr, margin, batch size, augmentation,
partial checkpoints) and ``[model]``. Uses CUDA when present (``[compute] device``
is a run-only knob). Writes ``train/epoch=NNN/`` with ``checkpoint.pt`` and
``steps.parquet``. While it trains, progress is saved every
``checkpoint_minutes`` (or ``checkpoint_every`` steps) to the hidden
``train/.partial-epoch=NNN.pt``; a killed epoch's rerun continues from there.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import luigi
import numpy as np
import pandas as pd
import torch

from models.embedding_net import build_model
from models.weights import apply_weights
from pipeline import paths
from pipeline.data.batches import AugmentSettings
from pipeline.training.checkpoint import load_checkpoint, save_checkpoint
from pipeline.device import resolve_device
from pipeline.experiment_config import record_or_check
from pipeline.data.pixel_store import open_store
from pipeline.training.partial import fingerprint, load_partial, partial_path, remove_partial, save_partial
from pipeline.training.loop import (STEP_LOG_COLUMNS, STEP_LOG_DTYPES, PartialSaves, TrainSettings, make_optimizer,
                               make_scheduler, train_one_epoch)
from pipeline.sampling.list_files import training_steps
from tasks.base import RecordedSettings, log, progress_reporter, single_writer, temporary_dir
from tasks.config import artifacts, compute, experiment_param, model, RunSeed
from tasks.index_dataset import IndexDataset
from tasks.triplet_list import TripletList

CHECKPOINT = "checkpoint.pt"
STEPS = "steps.parquet"
SUMMARY = "summary.json"


def train_seconds(train_dir: str | Path) -> float | None:
    """Seconds an epoch took, from its small summary (no need to load the checkpoint)."""
    path = Path(train_dir) / SUMMARY
    return json.loads(path.read_text()).get("seconds") if path.is_file() else None


class TrainEpoch(RecordedSettings, RunSeed, luigi.Task):
    """Epoch N: load epoch N-1's checkpoint, train over TripletList(N), save."""

    experiment = experiment_param()
    epoch = luigi.IntParameter(description="0 = the initial (pretrained or random) network")
    batch_size = luigi.IntParameter(default=64)
    optimizer = luigi.ChoiceParameter(choices=["sgd", "adam"], default="sgd")
    lr = luigi.FloatParameter(default=1e-3)
    momentum = luigi.FloatParameter(default=0.9)
    weight_decay = luigi.FloatParameter(default=0.0)
    lr_step = luigi.IntParameter(default=0, description="decay lr every N epochs (0 = never)")
    lr_gamma = luigi.FloatParameter(default=0.1)
    margin = luigi.FloatParameter(default=1.0, description="the gap g of max(0, g + D(q,p) - D(q,n))")
    reduce = luigi.ChoiceParameter(choices=["mean", "active"], default="mean",
                                   description="loss over all triplets (course) or over active ones")
    in_batch = luigi.ChoiceParameter(choices=["listed", "all"], default="listed",
                                     description="batched lists: the listed triplets, or all in-batch ones")
    squared = luigi.BoolParameter(default=False, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                  description="squared instead of plain Euclidean distance")
    augment = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    crop_padding = luigi.IntParameter(default=2)
    flip = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    checkpoint_minutes = luigi.FloatParameter(default=10.0, significant=False,
                                              description="save the epoch's progress this often (0 = never)")
    checkpoint_every = luigi.IntParameter(default=0, significant=False,
                                          description="also save it every N steps (0 = only by time)")

    resources = {"gpu": 1}

    def requires(self) -> dict[str, luigi.Task]:
        deps: dict[str, luigi.Task] = {"index": IndexDataset()}
        if self.epoch > 0:
            deps["previous"] = TrainEpoch(experiment=self.experiment, epoch=self.epoch - 1)
            deps["triplets"] = TripletList(experiment=self.experiment, epoch=self.epoch)
        return deps

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(paths.train_dir(artifacts().root, self.experiment, self.epoch)))

    def recorded_settings(self) -> dict:
        return self.resolved_config()

    def train_settings(self) -> TrainSettings:
        return TrainSettings(batch_size=self.batch_size, optimizer=self.optimizer, lr=self.lr,
                             momentum=self.momentum, weight_decay=self.weight_decay, lr_step=self.lr_step,
                             lr_gamma=self.lr_gamma, margin=self.margin, squared=self.squared, reduce=self.reduce,
                             in_batch=self.in_batch)

    def resolved_config(self) -> dict:
        m = model()
        return {
            "run": {"experiment": self.experiment, "seed": self.seed},
            "dataset": {k: v for k, v in IndexDataset().param_kwargs.items() if k != "scheduler"},
            "model": {**asdict(m.settings()), "weights": m.weights, "weights_path": m.weights_path},
            "TrainEpoch": asdict(self.train_settings()) | {"augment": self.augment, "crop_padding": self.crop_padding,
                                                           "flip": self.flip},
        }

    @single_writer
    def run(self) -> None:
        started = time.perf_counter()
        if compute().threads:
            torch.set_num_threads(compute().threads)
        settings = self.train_settings()
        settings.validate()
        model().settings().validate()
        device = resolve_device(compute().device)
        config = self.resolved_config()
        record_or_check(self.config_path(), config, self.experiment)
        if self.epoch == 0:
            state = self._initial_state(config)
            steps = pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(STEP_LOG_COLUMNS, STEP_LOG_DTYPES)})
        else:
            state, steps = self._train(config, device, settings)
        state["seconds"] = round(time.perf_counter() - started, 3)
        with temporary_dir(self.output()) as tmp:
            save_checkpoint(tmp / CHECKPOINT, state)
            steps.to_parquet(tmp / STEPS, index=False)
            (tmp / SUMMARY).write_text(json.dumps({"epoch": self.epoch, "seconds": state["seconds"],
                                                   "steps": len(steps)}))
        remove_partial(partial_path(self.output().path))
        if len(steps):
            log.info("epoch %d: mean loss %.4f, active %.2f, %.1fs", self.epoch, steps["loss"].mean(),
                     steps["active_fraction"].mean(), state["seconds"])

    def _initial_state(self, config: dict) -> dict:
        torch.manual_seed(self.seed)
        m = model()
        net = build_model(m.settings())
        skipped = apply_weights(net, m.weights, m.weights_path)
        optimizer = make_optimizer(net, self.train_settings())
        scheduler = make_scheduler(optimizer, self.train_settings())
        return {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "epoch": 0, "config": config, "model_settings": asdict(net.settings), "initialised_keys": skipped}

    def _train(self, config: dict, device: torch.device, settings: TrainSettings) -> tuple[dict, pd.DataFrame]:
        prev = load_checkpoint(Path(self.input()["previous"].path) / CHECKPOINT)
        torch.manual_seed(int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]))
        steps, identity = training_steps(self.input()["triplets"].path, settings.batch_size)
        augment = AugmentSettings(crop_padding=self.crop_padding, flip=self.flip, enabled=self.augment)
        partial = partial_path(self.output().path)
        digest = fingerprint(identity, {"config": config, "epoch": self.epoch, "augment": asdict(augment)})
        resumed = load_partial(partial, digest)
        net = build_model(model().settings())
        net.load_state_dict(resumed[0]["model"] if resumed else prev["model"])
        net = net.to(device, memory_format=torch.channels_last)
        optimizer = make_optimizer(net, settings)
        optimizer.load_state_dict(resumed[0]["optimizer"] if resumed else prev["optimizer"])
        scheduler = make_scheduler(optimizer, settings)
        scheduler.load_state_dict(prev["scheduler"])
        store = open_store(self.input()["index"].path)
        saves = PartialSaves(save=lambda progress: save_partial(partial, net, optimizer, progress, digest),
                             every_steps=self.checkpoint_every, every_seconds=60.0 * self.checkpoint_minutes)
        steps = train_one_epoch(
            net, optimizer, steps, store, settings, epoch=self.epoch, seed=self.seed, device=device,
            augment_settings=augment, progress=progress_reporter(self, f"epoch {self.epoch}"),
            resume=resumed[1] if resumed else None, saves=saves,
        )
        scheduler.step()
        state = {"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "epoch": self.epoch, "config": config,
                 "model_settings": asdict(net.settings), "device": str(device)}
        return state, steps
