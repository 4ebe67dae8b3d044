"""Per-epoch triplet lists on disk (one Parquet dataset per epoch): sampled from the
saved artifacts (:func:`sample_epoch_list`), written and read back.

Read one epoch with ``pd.read_parquet("artifacts/demo/triplets/epoch-001")``, or
all epochs with ``pd.read_parquet("artifacts/demo/triplets")`` (the files carry an
integer ``epoch`` column; see :mod:`pipeline.paths`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.label_noise import LabelNoise, flip_labels
from pipeline.data.pixel_store import read_index
from pipeline.embedding.embed import load_embeddings
from pipeline.errors import ConfigError, PipelineError
from pipeline.paths import table_file
from pipeline.paths import TRIPLET_LIST_FILE as PART
from pipeline.sampling.base import ClassMembers, SamplingContext, TripletStrategy
from pipeline.sampling.driver import sample_triplets
from pipeline.sampling.settings import ListSettings
from pipeline.storage import corrupt_artifact, is_damage, reading

if TYPE_CHECKING:
    from distributed import Client

META_KEY = b"deep_ranking"


def write_triplet_list(out_dir: str | Path, table: pa.Table, meta: dict) -> Path:
    """Write ``table`` into ``out_dir`` (a temporary folder the caller renames)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[META_KEY] = json.dumps(meta, default=str).encode()
    path = out_dir / PART
    # Page checksums let readers tell overwritten bytes from real ids (see _read).
    pq.write_table(table.replace_schema_metadata(schema_meta), path, row_group_size=1 << 20,
                   write_page_checksum=True)
    return path


def _part(triplet_dir: str | Path) -> Path:
    path = Path(triplet_dir) / PART
    if not path.is_file():
        raise PipelineError(f"triplet list {path} is missing; run the TripletList task for that epoch")
    return path


def _read(path: Path, columns: list[str] | None) -> pa.Table:
    """Read the list, turning truncated or overwritten bytes into a CorruptArtifactError."""
    try:
        return pq.read_table(path, columns=columns, page_checksum_verification=True)
    except Exception as exc:
        if is_damage(exc):
            raise corrupt_artifact(path, f"unreadable Parquet: {exc}") from exc
        raise


def read_triplet_meta(triplet_dir: str | Path) -> dict:
    """The metadata (strategy, seconds, settings) stored in a triplet list's schema."""
    path = _part(triplet_dir)
    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta.get(META_KEY, b"{}"))
    except Exception as exc:
        if is_damage(exc):  # includes metadata that is not valid JSON
            raise corrupt_artifact(path, f"unreadable Parquet footer: {exc}") from exc
        raise


def read_triplets(triplet_dir: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """One epoch's triplet list as a DataFrame.

    Raises :class:`~pipeline.errors.CorruptArtifactError` if the file is
    truncated or overwritten.
    """
    return _read(_part(triplet_dir), columns).to_pandas()


_ID_COLUMNS = ("query", "positive", "negative")


def _ids(t: pa.Table, path: Path) -> np.ndarray:
    bad = [c for c in _ID_COLUMNS if not pa.types.is_integer(t.schema.field(c).type) or t[c].null_count]
    if bad:
        raise corrupt_artifact(path, f"columns {bad} are not non-null integer image ids")
    return np.stack([t[c].to_numpy() for c in _ID_COLUMNS], axis=1).astype(np.int64, copy=False)


def read_list(triplet_dir: str | Path) -> tuple[pa.Table, np.ndarray]:
    """The whole list in one read, and its ``(T, 3)`` int64 (query, positive, negative) ids.

    Raises :class:`~pipeline.errors.CorruptArtifactError` if the file is
    damaged, naming it and the task that rebuilds it.
    """
    path = _part(triplet_dir)
    table = _read(path, None)
    return table, _ids(table, path)


# --------------------------------------------------------------------------- sampling from artifacts


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


def read_suspects(audit_file: str | Path, train_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(suspect, suggested_label)`` of each of ``train_ids`` from the audit whose summary is ``audit_file``."""
    path = table_file(audit_file, "images")
    with reading(path, "unreadable Parquet"):
        audit = pd.read_parquet(path, columns=["image_id", "suspect", "suggested_label"])
    if not np.array_equal(audit["image_id"].to_numpy(), train_ids):
        raise ConfigError(f"the audit in {path} is not of this dataset's training images; delete {audit_file} "
                          "so AuditEpoch rebuilds it")
    return audit["suspect"].to_numpy(bool), audit["suggested_label"].to_numpy(np.int64)


def sample_epoch_list(dataset_dir: str | Path, embeddings_dir: str | Path | None, out_dir: str | Path,
                      strategy: TripletStrategy, settings: ListSettings, *, epoch: int, seed: int, margin: float,
                      recorded: Mapping[str, Any], noise: LabelNoise = LabelNoise(),
                      audit_file: str | Path | None = None, client: Client | None = None) -> dict[str, Any]:
    """Sample ``epoch``'s list over the training split into ``out_dir``; returns its metadata.

    ``noise``: the experiment's label noise; the list is sampled from the flipped
    labels (:func:`~pipeline.data.label_noise.flip_labels`), never from the true ones.
    ``audit_file``: the audit of the epoch before (:mod:`pipeline.audit`), read when
    ``settings.suspects`` is not ``keep``: its suspects are left out of the epoch's
    list altogether (``exclude``: no anchor, positive or negative is one; a batched
    list still forwards ``image_passes`` times the whole split) or sampled as their
    suggested class (``relabel``).

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
    labels = flip_labels(train["label"].to_numpy(), noise, seed)
    suspects = np.zeros(len(ids), dtype=bool)
    if audit_file is not None and settings.suspects != "keep":
        suspects, suggested = read_suspects(audit_file, ids)
        if settings.suspects == "relabel":
            labels = np.where(suspects, suggested, labels)
        else:
            keep = ~suspects
            ids, labels = ids[keep], labels[keep]
            embeddings = embeddings[keep] if embeddings is not None else None
    ctx = SamplingContext(classes=ClassMembers.from_labels(labels), epoch=epoch, seed=seed,
                          margin=margin, embeddings=embeddings, left_out=len(train) - len(ids))
    table = sample_triplets(ctx, strategy, ids, settings, client)
    meta = {"strategy": settings.strategy_for(epoch), "settings": dict(recorded), "seed": seed,
            "seconds": round(time.perf_counter() - started, 3), "rows": table.num_rows}
    if audit_file is not None and settings.suspects != "keep":
        meta["suspects"] = {settings.suspects: int(suspects.sum())}
    if noise.active:  # a list read with pandas says its labels are not the dataset's
        meta["label_noise"] = {"share": noise.share, "kind": noise.kind}
    write_triplet_list(out_dir, table, meta)
    return meta
