"""One epoch's triplet list from saved artifacts: the dataset index and, for mined
strategies, the previous epoch's embedding shards."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pandas as pd

from pipeline.data.pixel_store import read_index
from pipeline.embedding.embed import load_embeddings
from pipeline.errors import ConfigError
from pipeline.sampling.base import SamplingContext, TripletStrategy
from pipeline.sampling.class_members import ClassMembers
from pipeline.sampling.driver import sample_triplets
from pipeline.sampling.list_files import write_triplet_list
from pipeline.sampling.list_settings import ListSettings

if TYPE_CHECKING:
    from distributed import Client


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


def _aligned_embeddings(embeddings_dir: Path, train_ids: np.ndarray) -> np.ndarray:
    emb = load_embeddings(embeddings_dir, "train")
    if not np.array_equal(emb.image_ids, train_ids):
        raise ConfigError(f"embeddings in {embeddings_dir} do not match the dataset index; "
                          "delete that folder so EmbedEpoch rebuilds it")
    return emb.vectors


def sample_epoch_list(dataset_dir: str | Path, embeddings_dir: str | Path | None, out_dir: str | Path,
                      strategy: TripletStrategy, settings: ListSettings, *, epoch: int, seed: int, margin: float,
                      recorded: Mapping[str, Any], client: Client | None = None) -> dict[str, Any]:
    """Sample ``epoch``'s list over the training split into ``out_dir``; returns its metadata.

    ``embeddings_dir`` holds the previous epoch's shards (mined strategies) or is
    None. ``recorded`` (the list's settings) is kept in the Parquet metadata, so
    a list read with pandas says how it was made. ``client``: the dask.distributed
    cluster that samples the class blocks (None: ``settings.dask_scheduler``).
    """
    started = time.perf_counter()
    index = read_index(dataset_dir, columns=["image_id", "split", "label", "class_id", "path"])
    train = index[index["split"] == "train"].sort_values("image_id")
    check_classes(train)
    ids = train["image_id"].to_numpy()
    embeddings = _aligned_embeddings(Path(embeddings_dir), ids) if embeddings_dir is not None else None
    ctx = SamplingContext(classes=ClassMembers.from_labels(train["label"].to_numpy()), epoch=epoch, seed=seed,
                          margin=margin, embeddings=embeddings)
    table = sample_triplets(ctx, strategy, ids, settings, client)
    meta = {"strategy": settings.strategy_for(epoch), "settings": dict(recorded), "seed": seed,
            "seconds": round(time.perf_counter() - started, 3), "rows": table.num_rows}
    write_triplet_list(out_dir, table, meta)
    return meta
