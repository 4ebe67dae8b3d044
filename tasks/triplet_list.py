"""Sample one epoch's triplet list into Parquet.

    luigi --module tasks TripletList --epoch 2 --local-scheduler

Settings: ``[TripletList]`` (strategy, triplets_per_query, mining options);
the seed comes from ``[run] seed``. Mined strategies read the previous
epoch's embedding shards, so ``TripletList(N)`` then requires ``EmbedEpoch(N-1)``.
Inspect the result with ``python -m pipeline.show triplets --epoch 2``.
"""

from __future__ import annotations

import time

import luigi
import numpy as np
import pandas as pd

from pipeline import paths
from pipeline.data.pixel_store import read_index
from pipeline.embedding.embed import load_embeddings
from pipeline.errors import ConfigError
from pipeline.experiment_config import record_or_check
from pipeline.sampling import ClassLayout, SamplingContext, get_strategy, sample_triplets
from pipeline.sampling.list_files import write_triplet_list
from tasks.base import RecordedSettings, log, single_writer, temporary_dir
from tasks.config import artifacts, experiment_param, RunSeed
from tasks.index_dataset import IndexDataset


def check_classes(train: pd.DataFrame) -> None:
    """Every class needs two training images (a query and a different positive)."""
    counts = train.groupby("class_id")["image_id"].count()
    lone = counts[counts < 2]
    if len(lone):
        cls = lone.index[0]
        where = train.loc[train["class_id"] == cls, "path"].iloc[0]
        raise ConfigError(
            f"class {cls!r} has a single training image ({where}); a triplet needs a different image of the "
            f"same class as positive, so every class needs at least 2 training images. Add images to that class or "
            f"remove it ({len(lone)} such class(es))"
        )


class TripletList(RecordedSettings, RunSeed, luigi.Task):
    """Every training image is the query ``triplets_per_query`` times, in a seeded shuffled order."""

    experiment = experiment_param()
    epoch = luigi.IntParameter(description="epoch (1-based) this list trains")
    strategy = luigi.Parameter(default="uniform", description="uniform, semihard, hard, mixed or batched")
    triplets_per_query = luigi.IntParameter(default=1)
    positive = luigi.Parameter(default="uniform", description="uniform, farthest or relevance (mined strategies)")
    candidates = luigi.Parameter(default="pool", description="pool or knn (mined strategies)")
    pool_size = luigi.IntParameter(default=64)
    knn_k = luigi.IntParameter(default=100)
    mined_share = luigi.FloatParameter(default=0.5, description="share of mined rows for strategy = mixed")
    mined_strategy = luigi.Parameter(default="semihard", description="inner strategy of mixed")
    relevance_cap = luigi.FloatParameter(default=0.9, description="positive = relevance: weight cap quantile")
    batch_classes = luigi.IntParameter(default=10, description="batched: classes per batch (P)")
    batch_seeds = luigi.IntParameter(default=10, description="batched: seed images per class and batch (K)")
    image_passes = luigi.IntParameter(default=7, description="batched: images forwarded per epoch, in training sets")
    hard_share = luigi.FloatParameter(default=1.0, description="batched: share of seeds that bring a hard negative")
    hard_top = luigi.IntParameter(default=10, description="batched: hard negative drawn among this many nearest")
    triplets_per_anchor = luigi.IntParameter(default=16, description="batched: listed triplets per anchor")
    triplet_rule = luigi.Parameter(default="active", description="batched: active, semihard, hard or uniform")
    mine_first_epoch = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                           description="epoch 1 mines from epoch 0's embeddings (else uniform)")
    n_blocks = luigi.IntParameter(default=8, significant=False, description="class blocks sampled in parallel")
    scheduler = luigi.Parameter(default="threads", significant=False, description="dask scheduler")

    @property
    def margin(self) -> float:
        """The loss margin of the epoch this list trains (``[TrainEpoch] margin``)."""
        from tasks.train_epoch import TrainEpoch

        return TrainEpoch(experiment=self.experiment, epoch=self.epoch).margin

    def _unmined_first_epoch(self) -> bool:
        return self.epoch == 1 and not self.mine_first_epoch

    def _strategy_name(self) -> str:
        # Without embeddings to mine, a batched list stays batched (plain P x K batches).
        if self._unmined_first_epoch() and self.strategy != "batched":
            return "uniform"
        return self.strategy

    def _strategy(self):
        return get_strategy(self._strategy_name(), positive=self.positive, candidates=self.candidates,
                            pool_size=self.pool_size, knn_k=self.knn_k, mined_share=self.mined_share,
                            mined_strategy=self.mined_strategy, relevance_cap=self.relevance_cap,
                            batch_classes=self.batch_classes, batch_seeds=self.batch_seeds,
                            image_passes=self.image_passes, hard_share=self.hard_share, hard_top=self.hard_top,
                            triplets_per_anchor=self.triplets_per_anchor, triplet_rule=self.triplet_rule)

    def _needs_embeddings(self) -> bool:
        return self._strategy().needs_embeddings and not self._unmined_first_epoch()

    def requires(self) -> dict[str, luigi.Task]:
        if self.epoch < 1:
            raise ConfigError(f"TripletList --epoch {self.epoch}: epochs that train start at 1")
        deps: dict[str, luigi.Task] = {"index": IndexDataset()}
        if self._needs_embeddings():
            from tasks.embed_epoch import EmbedEpoch

            deps["embeddings"] = EmbedEpoch(experiment=self.experiment, epoch=self.epoch - 1)
        return deps

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(paths.triplets_dir(artifacts().root, self.experiment, self.epoch)))

    def sampling_settings(self) -> dict:
        settings = {k: v for k, v in self.param_kwargs.items() if k not in ("experiment", "epoch", "n_blocks",
                                                                              "scheduler")}
        return {**settings, "margin": self.margin}

    def recorded_settings(self) -> dict:
        return {"TripletList": self.sampling_settings(), "run": {"seed": self.seed}}

    @single_writer
    def run(self) -> None:
        started = time.perf_counter()
        record_or_check(self.config_path(), self.recorded_settings(), self.experiment)
        index = read_index(self.input()["index"].path, columns=["image_id", "split", "label", "class_id", "path"])
        train = index[index["split"] == "train"].sort_values("image_id")
        check_classes(train)
        embeddings = None
        if "embeddings" in self.input():
            emb = load_embeddings(self.input()["embeddings"].path, "train")
            if not np.array_equal(emb.image_ids, train["image_id"].to_numpy()):
                raise ConfigError(f"embeddings in {self.input()['embeddings'].path} do not match the dataset index; "
                                  "delete that folder so EmbedEpoch rebuilds it")
            embeddings = emb.vectors
        ctx = SamplingContext(layout=ClassLayout.from_labels(train["label"].to_numpy()), epoch=self.epoch,
                              seed=self.seed, margin=self.margin, embeddings=embeddings)
        table = sample_triplets(ctx, self._strategy(), train["image_id"].to_numpy(),
                                triplets_per_query=self.triplets_per_query, n_blocks=self.n_blocks,
                                scheduler=self.scheduler)
        meta = {"strategy": self._strategy_name(), "settings": self.sampling_settings(), "seed": self.seed,
                "seconds": round(time.perf_counter() - started, 3), "rows": table.num_rows}
        with temporary_dir(self.output()) as tmp:
            write_triplet_list(tmp, table, meta)
        log.info("triplet list for epoch %d: %d rows (%s) in %.1fs", self.epoch, table.num_rows,
                 self._strategy_name(), meta["seconds"])
