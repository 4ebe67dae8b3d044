"""The tasks of one epoch: its triplet list, its training and its embeddings.

    luigi --module tasks TripletList --epoch 2 --local-scheduler
    luigi --module tasks TrainEpoch --epoch 2 --local-scheduler
    luigi --module tasks EmbedEpoch --epoch 2 --local-scheduler

They live together because they recurse through the epochs:
``TrainEpoch(N)`` needs ``TripletList(N)``, whose mined strategies read
``EmbedEpoch(N-1)``, which embeds with ``TrainEpoch(N-1)``.

- ``TripletList``: ``[TripletList]`` settings; margin from ``[loss]``, seed from
  ``[run]``; a plain list's class blocks run on ``[dask] address`` when it is set.
  Writes ``triplets/epoch=NNN/part-00000.parquet``; see it with
  ``python -m pipeline.show triplets --epoch 2``.
- ``TrainEpoch``: ``[TrainEpoch]`` (optimiser, batch size, augmentation, partial
  checkpoints), ``[loss]`` and ``[model]``; epoch 0 saves the initial network.
  Writes ``train/epoch=NNN/`` (``checkpoint.pt``, ``steps.parquet``,
  ``summary.json``); progress is saved to the hidden ``train/.partial-epoch=NNN.pt``
  every ``checkpoint_minutes`` (or ``checkpoint_every`` steps), and a killed
  epoch's rerun continues from there. ``--processes N`` (and ``--nnodes``,
  ``--node-rank``, ``--rendezvous`` across machines) trains the epoch on N ranks
  (:mod:`pipeline.distributed`; README "Distributed training").
- ``EmbedEpoch``: every train and validation image under epoch N's network, to
  ``embeddings/epoch=NNN/`` (Parquet shards + manifest.json); load a split with
  ``pipeline.embedding.embed.load_embeddings(folder, "val")``. With ``[dask] address``
  (``--dask-address local:2``: two embedding processes) shards of the index run on
  the cluster's workers, each loading the network once; ``[EmbedEpoch]
  dask_resources = GPU=1`` sends them to GPU workers only.

Training and embedding use CUDA when present (``[compute] device`` is a run-only knob).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import luigi

from pipeline import paths
from pipeline.dask_cluster import dask_client, parse_address
from pipeline.data.batches import AugmentSettings
from pipeline.device import start_compute
from pipeline.distributed.epoch import join_epoch, train_epoch_on_ranks
from pipeline.distributed.settings import DistributedSettings
from pipeline.embedding.epoch import EmbedSettings, embed_epoch
from pipeline.errors import ConfigError
from pipeline.sampling import SETTINGS_CLASSES, BatchOptions, ListSettings, MinedOptions, TripletStrategy, get_strategy
from pipeline.sampling.driver import runs_on_dask
from pipeline.sampling.epoch_list import sample_epoch_list
from pipeline.settings import significant
from pipeline.training.epoch import EpochSettings, epoch_seconds, finish_epoch, train_epoch, write_epoch
from pipeline.training.loop import empty_step_log
from pipeline.training.optimization import TrainSettings
from pipeline.training.partial import PartialSaveSettings
from pipeline.training.state import initial_state
from tasks.config import RunSeed, artifacts, compute, experiment_param, loss, model
from tasks.config import dask as dask_section
from tasks.config_keys import check_config_keys
from tasks.index_dataset import IndexDataset
from tasks.output_writing import log, single_writer, temporary_dir
from tasks.parameters import settings_of, settings_parameters
from tasks.progress import progress_reporter
from tasks.recorded_settings import RecordedSettings

if TYPE_CHECKING:
    import torch

# Strategy options go to get_strategy as given: each strategy checks only those it takes.
_STRATEGY_OPTIONS = tuple(f.name for cls in (MinedOptions, BatchOptions) for f in dataclasses.fields(cls)
                          if "help" in f.metadata)


@settings_parameters(*SETTINGS_CLASSES)
class TripletList(RecordedSettings, RunSeed, luigi.Task):
    """Epoch N's triplets, sampled offline (mined strategies: from epoch N-1's embeddings)."""

    experiment = experiment_param()
    epoch = luigi.IntParameter(description="epoch (1-based) this list trains")

    def list_settings(self) -> ListSettings:
        return settings_of(self, ListSettings)

    def sampling_strategy(self) -> TripletStrategy:
        return get_strategy(self.list_settings().strategy_for(self.epoch),
                            **{name: getattr(self, name) for name in _STRATEGY_OPTIONS})

    def requires(self) -> dict[str, luigi.Task]:
        if self.epoch < 1:
            raise ConfigError(f"TripletList --epoch {self.epoch}: epochs that train start at 1")
        deps: dict[str, luigi.Task] = {"index": IndexDataset()}
        if self.sampling_strategy().needs_embeddings and self.list_settings().mines(self.epoch):
            deps["embeddings"] = EmbedEpoch(experiment=self.experiment, epoch=self.epoch - 1)
        return deps

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(paths.triplets_dir(artifacts().root, self.experiment, self.epoch)))

    def sampling_settings(self) -> dict:
        names = {name for cls in SETTINGS_CLASSES for name in significant(cls())}
        return {**{k: v for k, v in self.param_kwargs.items() if k in names}, "margin": loss().settings().margin}

    def recorded_settings(self) -> dict:
        return {"TripletList": self.sampling_settings(), "run": {"seed": self.seed}}

    @single_writer
    def run(self) -> None:
        self.record_settings()
        embeddings = self.input().get("embeddings")
        strategy = self.sampling_strategy()
        address = dask_section().settings().address
        parse_address(address)  # a malformed address is refused even where no cluster is needed
        # A batched list is sampled whole, in this process: no cluster to start for it.
        with dask_client(address if runs_on_dask(strategy) else "") as client, temporary_dir(self.output()) as tmp:
            meta = sample_epoch_list(self.input()["index"].path, embeddings.path if embeddings else None, tmp,
                                     strategy, self.list_settings(), epoch=self.epoch, seed=self.seed,
                                     margin=loss().settings().margin, recorded=self.sampling_settings(),
                                     client=client)
        log.info("triplet list for epoch %d: %d rows (%s) in %.1fs", self.epoch, meta["rows"], meta["strategy"],
                 meta["seconds"])


@settings_parameters(TrainSettings, AugmentSettings, PartialSaveSettings, DistributedSettings)
class TrainEpoch(RecordedSettings, RunSeed, luigi.Task):
    """Epoch N: load epoch N-1's checkpoint, train over TripletList(N), save.

    ``processes`` / ``nnodes`` above 1 train the epoch data-parallel on several
    ranks (:mod:`pipeline.distributed`). A machine with ``node_rank`` > 0 runs none
    of the graph: it waits for node 0's inputs on the shared artifacts root, joins
    the training and returns once node 0's rank 0 has written the epoch.
    """

    experiment = experiment_param()
    epoch = luigi.IntParameter(description="0 = the initial (pretrained or random) network")

    resources = {"gpu": 1}

    def distributed_settings(self) -> DistributedSettings:
        return settings_of(self, DistributedSettings)

    def requires(self) -> dict[str, luigi.Task]:
        distributed = self.distributed_settings()
        distributed.check()  # a bad layout is refused before anything runs
        if distributed.node_rank > 0:
            return {}  # node 0 runs the graph; run() waits for its outputs on the shared artifacts root
        deps: dict[str, luigi.Task] = {"index": IndexDataset()}
        if self.epoch > 0:
            deps["previous"] = TrainEpoch(experiment=self.experiment, epoch=self.epoch - 1)
            deps["triplets"] = TripletList(experiment=self.experiment, epoch=self.epoch)
        return deps

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(paths.train_dir(artifacts().root, self.experiment, self.epoch)))

    def epoch_settings(self) -> EpochSettings:
        train, augment, loss_settings, m = settings_of(self, TrainSettings), settings_of(self, AugmentSettings), \
            loss().settings(), model()
        config = {
            "run": {"experiment": self.experiment, "seed": self.seed},
            "dataset": significant(IndexDataset().settings()),
            "model": {**asdict(m.settings()), **asdict(m.weight_settings())},
            "TrainEpoch": {**significant(train), **significant(augment)},
            "loss": significant(loss_settings),
        }
        return EpochSettings(model=m.settings(), train=train, loss=loss_settings, augment=augment, config=config)

    def recorded_settings(self) -> dict:
        return dict(self.epoch_settings().config)

    def run(self) -> None:
        distributed = self.distributed_settings()
        distributed.check()
        if distributed.node_rank > 0:
            self._join_node_0(distributed)
        else:
            self._train()

    @single_writer
    def _train(self) -> None:
        device = start_compute(compute().settings())
        settings = self.epoch_settings()
        settings.check()
        self.record_settings()
        distributed = self.distributed_settings()
        if self.epoch > 0 and distributed.distributed:
            # Global rank 0 writes the epoch folder (atomically) before the ranks return.
            train_epoch_on_ranks(
                Path(self.input()["previous"].path) / paths.CHECKPOINT_FILE, self.input()["triplets"].path,
                self.input()["index"].path, self.output().path, settings, distributed,
                progress=progress_reporter(self, f"epoch {self.epoch}"), **self._rank_options(device))
            log.info("epoch %d: trained on %d ranks in %.1fs", self.epoch, distributed.world_size,
                     epoch_seconds(self.output().path) or 0.0)
            return
        if self.epoch == 0:
            state = initial_state(settings.model, model().weight_settings(), settings.train, seed=self.seed,
                                  config=settings.config)
            step_log = empty_step_log()
        else:
            state, step_log = train_epoch(
                Path(self.input()["previous"].path) / paths.CHECKPOINT_FILE, self.input()["triplets"].path,
                self.input()["index"].path, self.output().path, settings, epoch=self.epoch, seed=self.seed,
                device=device, saves=settings_of(self, PartialSaveSettings),
                progress=progress_reporter(self, f"epoch {self.epoch}"))
        with temporary_dir(self.output()) as tmp:
            write_epoch(tmp, state, step_log)
        finish_epoch(self.output().path)
        if len(step_log):
            log.info("epoch %d: mean loss %.4f, active %.2f, %.1fs", self.epoch, step_log["loss"].mean(),
                     step_log["active_fraction"].mean(), state["seconds"])

    def _join_node_0(self, distributed: DistributedSettings) -> None:
        """Node > 0: wait for node 0's inputs, train with it; node 0's rank 0 writes the epoch."""
        check_config_keys()
        if self.epoch == 0:
            raise ConfigError(f"TrainEpoch --epoch 0 --node-rank {distributed.node_rank}: epoch 0 is not trained "
                              "(node 0 writes the initial network alone); start the other nodes at epoch 1")
        settings = self.epoch_settings()
        settings.check()
        root = artifacts().root
        self.set_status_message(f"waiting for node 0's inputs of epoch {self.epoch}")
        join_epoch(paths.train_dir(root, self.experiment, self.epoch - 1) / paths.CHECKPOINT_FILE,
                   paths.triplets_dir(root, self.experiment, self.epoch), IndexDataset().output().path,
                   self.output().path, settings, distributed,
                   **self._rank_options(start_compute(compute().settings())))

    def _rank_options(self, device: torch.device) -> dict:
        """What every node's ranks are launched with; the rendezvous prefix is the same on every
        node and one per epoch, so a late node never joins another epoch's ranks."""
        return {"epoch": self.epoch, "seed": self.seed, "device": device, "threads": compute().settings().threads,
                "saves": settings_of(self, PartialSaveSettings),
                "store_prefix": f"TrainEpoch/{self.experiment}/{self.epoch}"}


@settings_parameters(EmbedSettings)
class EmbedEpoch(luigi.Task):
    """Vectors of every image under epoch N's network (eval mode, no augmentation)."""

    experiment = experiment_param()
    epoch = luigi.IntParameter()

    resources = {"gpu": 1}

    def requires(self) -> dict[str, luigi.Task]:
        return {"index": IndexDataset(), "train": TrainEpoch(experiment=self.experiment, epoch=self.epoch)}

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(paths.embeddings_dir(artifacts().root, self.experiment, self.epoch)))

    @single_writer
    def run(self) -> None:
        started = time.perf_counter()
        settings, address = settings_of(self, EmbedSettings), dask_section().settings().address
        self.set_status_message("embedding")
        # With [dask] address, shards run on the cluster's workers, which pick their own device.
        with dask_client(address, resources=settings.resources()) as client, temporary_dir(self.output()) as tmp:
            n = embed_epoch(Path(self.input()["train"].path) / paths.CHECKPOINT_FILE, self.input()["index"].path, tmp,
                            model().settings(), settings, epoch=self.epoch, compute=compute().settings(),
                            what=f"epoch {self.epoch} of experiment {self.experiment!r}", client=client)
        log.info("embedded %d images for epoch %d in %.1fs%s", n, self.epoch, time.perf_counter() - started,
                 f" on the dask cluster {address}" if address.strip() else "")
