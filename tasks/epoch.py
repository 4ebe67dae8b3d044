"""The tasks of one epoch: its triplet list, its training and its embeddings.

    luigi --module tasks TripletList --epoch 2 --local-scheduler
    luigi --module tasks TrainEpoch --epoch 2 --local-scheduler
    luigi --module tasks JoinEpoch --epoch 2 --node-rank 1 --local-scheduler   # machines 1.. of a multi-node epoch
    luigi --module tasks EmbedEpoch --epoch 2 --local-scheduler
    luigi --module tasks AuditEpoch --epoch 2 --local-scheduler

They live together because they recurse through the epochs:
``TrainEpoch(N)`` needs ``TripletList(N)``, whose mined strategies read
``EmbedEpoch(N-1)`` (and, with ``[TripletList] suspects``, ``AuditEpoch(N-1)``),
which embeds with ``TrainEpoch(N-1)``.

- ``TripletList``: ``[TripletList]`` settings; margin from ``[loss]``, seed from
  ``[run]``; a plain list's class blocks run on ``[dask] address`` when it is set.
  Writes ``triplets/epoch-NNN/part-00000.parquet``; see it with
  ``python -m pipeline.show triplets --epoch 2``, or read every epoch's with
  ``pd.read_parquet("artifacts/demo/triplets")``.
- ``TrainEpoch``: ``[TrainEpoch]`` (optimiser, batch size, augmentation, partial
  checkpoints), ``[loss]`` and ``[model]``; epoch 0 saves the initial network.
  Writes ``train/epoch-NNN/`` (``steps.parquet``, ``_checkpoint.pt``,
  ``_summary.json``); progress is saved to the hidden ``train/.partial-epoch-NNN.pt``
  every ``checkpoint_minutes`` (or ``checkpoint_every`` steps), and a killed
  epoch's rerun continues from there. ``--processes N`` (and ``--nnodes``,
  ``--rendezvous`` across machines) trains the epoch on N ranks
  (:mod:`pipeline.distributed`; docs/scaling.md); the other machines run
  ``luigi --module tasks JoinEpoch --epoch 2 --node-rank 1``.
- ``EmbedEpoch``: every train and validation image under epoch N's network, to
  ``embeddings/epoch-NNN/`` (Parquet shards + _manifest.json); load a split with
  ``pipeline.embedding.embed.load_embeddings(folder, "val")``. With ``[dask] address``
  (``--dask-address local:2``: two embedding processes) shards of the index run on
  the cluster's workers, each loading the network once; ``[EmbedEpoch]
  dask_resources = GPU=1`` sends them to GPU workers only.
- ``AuditEpoch``: ``[AuditEpoch]`` settings; the labels the experiment uses
  (``[run] label_noise``) audited with EmbedEpoch(N) and earlier epochs' embeddings
  (:mod:`pipeline.audit`): ``audit/images/epoch-NNN.parquet``,
  ``audit/duplicates/epoch-NNN.parquet`` and then ``audit/epoch-NNN.json``; see it with
  ``python -m pipeline.show audit --epoch 2``. With ``[dask] address`` its
  neighbour votes run in blocks on the cluster's workers, with the same result.

Training and embedding use CUDA when present (``[compute] device`` is a run-only knob).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import luigi

from pipeline import paths
from pipeline.audit.settings import AuditSettings, audit_is_current, pooled_epochs
from pipeline.dask_cluster import dask_client, parse_address
from pipeline.data.settings import AugmentSettings
from pipeline.device import start_compute
from pipeline.distributed.settings import DistributedSettings
from pipeline.embedding.settings import EmbedSettings
from pipeline.errors import ConfigError
from pipeline.sampling import ListSettings, TripletStrategy
from pipeline.sampling.driver import runs_on_dask
from pipeline.settings import significant
from pipeline.training.settings import EpochSettings, PartialSaveSettings, TrainSettings
from tasks.config import RunSeed, artifacts, compute, experiment_param, loss, model, run, tracking
from tasks.config import dask as dask_section
from tasks.config_keys import check_config_keys
from tasks.index_dataset import IndexDataset
from tasks.output_writing import log, single_writer, temporary_dir
from tasks.parameters import settings_of, settings_parameters
from tasks.progress import progress_reporter
from tasks.recorded_settings import RecordedSettings


@settings_parameters(ListSettings)
class TripletList(RecordedSettings, RunSeed, luigi.Task):
    """Epoch N's triplets, sampled offline (mined strategies: from epoch N-1's embeddings)."""

    experiment = experiment_param()
    epoch = luigi.IntParameter(description="epoch (1-based) this list trains")

    def list_settings(self) -> ListSettings:
        return settings_of(self, ListSettings)

    def sampling_strategy(self) -> TripletStrategy:
        """This epoch's strategy; the section is checked first, so a bad or ignored setting
        is refused while Luigi schedules (requires() calls this)."""
        return self.list_settings().sampler(self.epoch)

    def requires(self) -> dict[str, luigi.Task]:
        if self.epoch < 1:
            raise ConfigError(f"TripletList --epoch {self.epoch}: epochs that train start at 1")
        run().settings().noise()  # a bad [run] label_noise is refused while scheduling
        deps: dict[str, luigi.Task] = {"index": IndexDataset()}
        if self.sampling_strategy().needs_embeddings and self.list_settings().mines(self.epoch):
            deps["embeddings"] = EmbedEpoch(experiment=self.experiment, epoch=self.epoch - 1)
        if self.list_settings().uses_audit(self.epoch):
            deps["audit"] = AuditEpoch(experiment=self.experiment, epoch=self.epoch - 1)
        return deps

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(paths.triplets_dir(artifacts().root, self.experiment, self.epoch)))

    def sampling_settings(self) -> dict:
        names = set(significant(ListSettings()))
        return {**{k: v for k, v in self.param_kwargs.items() if k in names}, "margin": loss().settings().margin}

    def recorded_settings(self) -> dict:
        return {"TripletList": self.sampling_settings(), "run": {"seed": self.seed, **run().settings().recorded_noise()}}

    @single_writer
    def run(self) -> None:
        from pipeline.sampling.list_files import sample_epoch_list

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
                                     noise=run().settings().noise(),
                                     audit_file=self.input()["audit"].path if "audit" in self.input() else None,
                                     client=client)
        with tracking().event_log(self.experiment, "lists", self.epoch) as events:
            if events.enabled:
                from pipeline.tracking import list_scalars

                events.scalars(self.epoch, list_scalars(self.output().path, loss().settings().margin), "lists/")
        log.info("triplet list for epoch %d: %d rows (%s) in %.1fs", self.epoch, meta["rows"], meta["strategy"],
                 meta["seconds"])


class EpochRanks:
    """Mixin of the tasks that train an epoch on this machine's ranks (TrainEpoch, JoinEpoch)."""

    @property
    def resources(self) -> dict[str, int]:
        # Every rank of this machine holds a device for the whole epoch.
        return {"gpu": self.processes}

    def distributed_settings(self) -> DistributedSettings:
        return settings_of(self, DistributedSettings)


@settings_parameters(TrainSettings, AugmentSettings, PartialSaveSettings)
@settings_parameters(DistributedSettings, exclude=("node_rank",))
class TrainEpoch(EpochRanks, RecordedSettings, RunSeed, luigi.Task):
    """Epoch N: load epoch N-1's checkpoint, train over TripletList(N), save (epoch 0: the initial network).

    ``processes`` / ``nnodes`` above 1 train the epoch data-parallel on several
    ranks (:mod:`pipeline.distributed`); the other machines join with ``JoinEpoch``.
    """

    experiment = experiment_param()
    epoch = luigi.IntParameter(description="0 = the initial (pretrained or random) network")

    def requires(self) -> dict[str, luigi.Task]:
        # A bad value is refused while scheduling, before any task of the graph runs.
        self.epoch_settings().check()
        check_distributed(self.distributed_settings())
        deps: dict[str, luigi.Task] = {"index": IndexDataset()}
        if self.epoch > 0:
            deps["previous"] = TrainEpoch(experiment=self.experiment, epoch=self.epoch - 1)
            deps["triplets"] = TripletList(experiment=self.experiment, epoch=self.epoch)
        return deps

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(paths.train_dir(artifacts().root, self.experiment, self.epoch)))

    def epoch_settings(self) -> EpochSettings:
        """What the epoch computes, from ``[TrainEpoch]``, ``[loss]``, ``[model]`` and ``[dataset]``;
        its ``config`` is recorded in the checkpoint."""
        train, augment = settings_of(self, TrainSettings), settings_of(self, AugmentSettings)
        loss_settings, m = loss().settings(), model()
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

    @single_writer
    def run(self) -> None:
        from pipeline.distributed.run_epoch import run_epoch
        from pipeline.tracking import step_scalars
        from pipeline.training.epoch import steps_before

        device = start_compute(compute().settings())
        settings = self.epoch_settings()
        settings.check()
        self.record_settings()
        distributed = self.distributed_settings()
        inputs = self.input()
        # Every step's scalars, as it trains, on a run-wide step axis (a resumed epoch replays its saved steps).
        first = steps_before(Path(self.output().path).parent, self.epoch)
        with tracking().event_log(self.experiment, "train", self.epoch) as events:
            summary = run_epoch(
                self.output().path, settings, epoch=self.epoch, seed=self.seed, device=device,
                weights=model().weight_settings(), dataset_dir=inputs["index"].path,
                previous_checkpoint=Path(inputs["previous"].path) / paths.CHECKPOINT_FILE if self.epoch else None,
                triplet_dir=inputs["triplets"].path if self.epoch else None, distributed=distributed,
                **self.rank_options(),
                progress=progress_reporter(self, f"epoch {self.epoch}", also=lambda step, total, row: events.scalars(
                    first + int(row["step"]), step_scalars(row), "train/")))
        if summary["steps"]:
            where = f"trained on {distributed.world_size} ranks, " if distributed.distributed else ""
            log.info("epoch %d: %smean loss %.4f, active %.2f, %d steps in %.1fs", self.epoch, where, summary["loss"],
                     summary["active_fraction"], summary["steps"], summary["seconds"])

    def rank_options(self) -> dict:
        """What every node's ranks are launched with; the rendezvous prefix is the same on every
        node and one per epoch, so a late node never joins another epoch's ranks."""
        return {"threads": compute().settings().threads, "saves": settings_of(self, PartialSaveSettings),
                "store_prefix": f"TrainEpoch/{self.experiment}/{self.epoch}"}


@settings_parameters(DistributedSettings, section="TrainEpoch", exclude=("node_rank",))
class JoinEpoch(EpochRanks, RunSeed, luigi.Task):
    """On machine ``node_rank`` (1 .. nnodes-1): train epoch N with node 0, which runs the graph.

        luigi --module tasks JoinEpoch --epoch 3 --node-rank 1

    Runs none of the graph: waits up to ``timeout_s`` for node 0's inputs on the shared
    artifacts root, trains its share of the epoch, and is complete once node 0's rank 0
    has written the epoch folder. ``[TrainEpoch]`` gives the layout (processes, nnodes,
    rendezvous, timeout_s), as on node 0.
    """

    experiment = experiment_param()
    epoch = luigi.IntParameter(description="the epoch (from 1) node 0 is training")
    node_rank = luigi.IntParameter(description="this machine's number, 1 .. nnodes-1")

    def requires(self) -> dict:
        check_distributed(self.distributed_settings())
        return {}

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(paths.train_dir(artifacts().root, self.experiment, self.epoch)))

    def run(self) -> None:
        from pipeline.distributed.run_epoch import join_epoch

        check_config_keys()
        root, node_0 = artifacts().root, TrainEpoch(experiment=self.experiment, epoch=self.epoch)
        self.set_status_message(f"waiting for node 0's inputs of epoch {self.epoch}")
        join_epoch(paths.train_dir(root, self.experiment, self.epoch - 1) / paths.CHECKPOINT_FILE,
                   paths.triplets_dir(root, self.experiment, self.epoch), IndexDataset().output().path,
                   self.output().path, node_0.epoch_settings(), self.distributed_settings(), epoch=self.epoch,
                   seed=self.seed, device=start_compute(compute().settings()), **node_0.rank_options())


def check_distributed(distributed: DistributedSettings) -> None:
    """Refuse a bad layout while scheduling, including one the scheduler could never run: a
    task holds ``processes`` units of ``[resources] gpu``, and Luigi would leave a task that
    needs more than there are pending forever, without a word."""
    distributed.check()
    slots = luigi.configuration.get_config().getint("resources", "gpu", 1)
    if distributed.processes > slots:
        raise ConfigError(f"[TrainEpoch] processes = {distributed.processes} needs [resources] gpu = "
                          f"{distributed.processes} or more (now {slots}): each rank holds one unit of the "
                          "scheduler's gpu resource. Raise it in luigi.cfg, or train on fewer processes")


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
        from pipeline.embedding.epoch import embed_epoch

        started = time.perf_counter()
        settings, address = settings_of(self, EmbedSettings), dask_section().settings().address
        self.set_status_message("embedding")
        # With [dask] address, shards run on the cluster's workers, which pick their own device.
        with dask_client(address, resources=settings.resources()) as client, temporary_dir(self.output()) as tmp:
            n = embed_epoch(Path(self.input()["train"].path) / paths.CHECKPOINT_FILE, self.input()["index"].path, tmp,
                            model().settings(), settings, epoch=self.epoch, compute=compute().settings(),
                            what=f"epoch {self.epoch} of experiment {self.experiment!r}", client=client)
        if tracking().settings().tensorboard:
            from pipeline.tracking import write_epoch_projector

            write_epoch_projector(paths.tensorboard_dir(artifacts().root, self.experiment), self.output().path,
                                  self.input()["index"].path, self.epoch)
        log.info("embedded %d images for epoch %d in %.1fs%s", n, self.epoch, time.perf_counter() - started,
                 f" on the dask cluster {address}" if address.strip() else "")


@settings_parameters(AuditSettings)
class AuditEpoch(RunSeed, luigi.Task):
    """Audit the training labels with epoch N's embeddings and those of ``epochs - 1`` earlier epochs."""

    experiment = experiment_param()
    epoch = luigi.IntParameter(description="the epoch whose embeddings (and those before it) are audited")

    def settings(self) -> AuditSettings:
        return settings_of(self, AuditSettings)

    def requires(self) -> dict:
        self.settings().check()
        run().settings().noise()
        pooled = pooled_epochs(self.epoch, self.settings().epochs)
        return {"index": IndexDataset(),
                "embeddings": [EmbedEpoch(experiment=self.experiment, epoch=e) for e in pooled]}

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(paths.audit_file(artifacts().root, self.experiment, self.epoch)))

    def recorded_settings(self) -> dict:
        return {**significant(self.settings()), "seed": self.seed, **run().settings().recorded_noise()}

    def complete(self) -> bool:
        """Complete only if the audit was made with the current settings (else it is redone)."""
        return audit_is_current(self.output().path, self.recorded_settings())

    @single_writer
    def run(self) -> None:
        from pipeline.audit.epoch import audit_epoch

        with dask_client(dask_section().settings().address) as client:
            summary = audit_epoch(self.input()["index"].path, [t.path for t in self.input()["embeddings"]],
                                  self.output().path, self.settings(), epoch=self.epoch,
                                  noise=run().settings().noise(), seed=self.seed,
                                  recorded=self.recorded_settings(), client=client)
        log.info("audit of epoch %d: %d suspect labels of %d, %d exact and %d near duplicates, %d leaked "
                 "into validation, in %.1fs", self.epoch, summary["suspects"], summary["images"],
                 summary["exact_duplicates"], summary["near_duplicates"], summary["leakage"], summary["seconds"])
