"""Embedding every image of a dataset with a trained network, and the Parquet
shards that hold the vectors (``image_id``, ``split``, ``label``, ``vector``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from pipeline.device import autocast
from pipeline.errors import ConfigError, PipelineError
from pipeline.paths import EMBEDDING_MANIFEST as MANIFEST
from pipeline.paths import EPOCH_COLUMN
from pipeline.paths import embedding_shard
from pipeline.storage import corrupt_artifact, reading

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class Embeddings:
    """Vectors of one split, row-aligned with ``image_ids`` and ``labels`` (for validation's
    queries, ``vectors`` may also compute rows as they are read: see
    :class:`pipeline.evaluation.baseline.PixelRows`)."""

    image_ids: np.ndarray
    labels: np.ndarray
    vectors: np.ndarray


def embed_images(
    model: nn.Module, store: np.ndarray, image_ids: np.ndarray, *, batch_size: int = 512,
    device: torch.device | None = None, show_bar: bool = True,
) -> np.ndarray:
    """Float32 ``(len(image_ids), D)`` embeddings in eval mode, without augmentation (``device``:
    the one the model is on, default the CPU)."""
    # Imported here, not with the module: what reads saved embeddings (show, audit, reports,
    # search) never needs torch, which costs 2 s to import (pipeline.data.batches imports it).
    import torch

    from pipeline.data.batches import iterate_batches, to_float

    if batch_size < 1:
        raise ConfigError(f"[EmbedEpoch] batch_size = {batch_size}; it must be at least 1")
    device = torch.device("cpu") if device is None else device
    model.eval()
    ids = np.asarray(image_ids, dtype=np.int64)
    batches = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
    on_cpu = device.type == "cpu"
    # On the CPU the float conversion runs in the prefetch thread, overlapping the
    # model; on a GPU uint8 crosses the bus (4x fewer bytes) and converts there.
    loader = iterate_batches(store, batches, pin=not on_cpu, transform=to_float if on_cpu else None)
    out = None
    row = 0
    for pixels in tqdm(loader, total=len(batches), desc="embed", unit="batch", disable=not show_bar, leave=False,
                       mininterval=2.0):
        x = pixels if on_cpu else to_float(pixels.to(device, non_blocking=True))
        with torch.no_grad(), autocast(device):
            z = model(x).float().cpu().numpy()
        if out is None:
            out = np.empty((len(ids), z.shape[1]), np.float32)
        out[row : row + len(z)] = z
        row += len(z)
    return out if out is not None else np.zeros((0, 0), np.float32)


def write_shards(out_dir: str | Path, index: pd.DataFrame, vectors: np.ndarray, *, epoch: int,
                 rows_per_shard: int = 50_000, extra: dict | None = None) -> dict:
    """Write ``vectors`` (aligned with ``index`` rows) of ``epoch``'s network as Parquet
    shards plus a manifest (``_manifest.json``, which Parquet readers of the folder skip).

    ``index`` needs ``image_id``, ``split`` and ``label``; every row also gets the
    ``epoch``, so the ``embeddings`` folder reads as one table across epochs.
    ``out_dir`` should be a temporary folder that the caller renames into place.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dim = int(vectors.shape[1])
    shards = []
    for k, lo in enumerate(range(0, len(index), rows_per_shard)):
        part = index.iloc[lo : lo + rows_per_shard]
        flat = pa.array(np.ascontiguousarray(vectors[lo : lo + rows_per_shard], dtype=np.float32).reshape(-1))
        table = pa.table({
            EPOCH_COLUMN: pa.array(np.full(len(part), epoch, np.int32)),
            "image_id": pa.array(part["image_id"].to_numpy(np.int64)),
            "split": pa.array(part["split"].astype(str).to_numpy()).dictionary_encode(),
            "label": pa.array(part["label"].to_numpy(np.int32)),
            "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
        })
        name = embedding_shard(k)
        # Page checksums let readers tell overwritten bytes from real vectors: floats do
        # not compress, so they are stored as they are and damage would decode as numbers.
        pq.write_table(table, out_dir / name, write_page_checksum=True)
        shards.append({"file": name, "rows": len(part)})
    manifest = {
        "epoch": epoch,
        "dim": dim,
        "rows": int(len(index)),
        "splits": {str(k): int(v) for k, v in index["split"].value_counts().sort_index().items()},
        "shards": shards,
        **(extra or {}),
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def read_manifest(emb_dir: str | Path) -> dict:
    """The manifest of an embedding folder.

    Raises :class:`~pipeline.errors.CorruptArtifactError` if it is not valid
    JSON or does not describe a consistent set of shards.
    """
    path = Path(emb_dir) / MANIFEST
    if not path.is_file():
        raise PipelineError(f"embedding manifest {path} is missing; run EmbedEpoch for that epoch first")
    with reading(path, "not valid JSON"):  # JSONDecodeError, UnicodeDecodeError
        manifest = json.loads(path.read_text())
    problem = _manifest_problem(manifest)
    if problem:
        raise corrupt_artifact(path, problem)
    return manifest


def _manifest_problem(manifest: object) -> str | None:
    """What is inconsistent in a parsed manifest, or None."""
    def count(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    if not isinstance(manifest, dict):
        return "not a JSON object"
    for key in ("dim", "rows", "shards"):
        if key not in manifest:
            return f"no {key!r} entry"
    if not count(manifest["dim"]) or not count(manifest["rows"]) or not isinstance(manifest["shards"], list):
        return "'dim' and 'rows' must be counts and 'shards' a list"
    for shard in manifest["shards"]:
        if not (isinstance(shard, dict) and isinstance(shard.get("file"), str) and count(shard.get("rows"))):
            return f"shard entry {shard!r} needs a 'file' name and a 'rows' count"
        if Path(shard["file"]).name != shard["file"]:  # a plain name inside the folder, never a path out of it
            return f"shard file {shard['file']!r} is not a plain file name"
    splits = manifest.get("splits", {})
    if not (isinstance(splits, dict) and all(count(v) for v in splits.values())):
        return "'splits' must map each split to a count"
    listed = sum(s["rows"] for s in manifest["shards"])
    if listed != manifest["rows"]:
        return f"its shards list {listed} rows in total, but 'rows' says {manifest['rows']}"
    return None


def load_embeddings(emb_dir: str | Path, split: str | None = None) -> Embeddings:
    """Load one split's shards (or all rows) into one float32 array, sorted by image id.

    Raises :class:`~pipeline.errors.CorruptArtifactError` for a damaged manifest,
    a shard that is missing, truncated or overwritten, or one whose rows or
    vector size disagree with the manifest.
    """
    emb_dir = Path(emb_dir)
    manifest = read_manifest(emb_dir)
    dim = manifest["dim"]
    filters = [("split", "=", split)] if split else None
    tables = [_read_shard(emb_dir / s["file"], s["rows"], dim, filters) for s in manifest["shards"]]
    table = pa.concat_tables(tables) if tables else None
    expected = manifest.get("splits", {}).get(split) if split else None
    if expected is not None and (table.num_rows if table is not None else 0) != expected:
        raise corrupt_artifact(emb_dir / MANIFEST, f"lists {expected} {split!r} rows, but the shards hold "
                                                   f"{table.num_rows if table is not None else 0}")
    if table is None or table.num_rows == 0:
        return Embeddings(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, dim), np.float32))
    ids = table["image_id"].to_numpy()
    vec = table["vector"].combine_chunks().flatten().to_numpy().reshape(-1, dim)
    order = np.argsort(ids, kind="stable")
    return Embeddings(ids[order], table["label"].to_numpy().astype(np.int64)[order],
                      np.ascontiguousarray(vec[order], dtype=np.float32))


def _read_shard(path: Path, rows: int, dim: int, filters: list | None) -> pa.Table:
    """One shard's (filtered) rows, after checking it against its manifest entry."""
    if not path.is_file():
        raise corrupt_artifact(path, f"listed in {MANIFEST} but missing")
    # The footer alone gives the row count, so this check reads no data.
    with reading(path, "unreadable Parquet"):
        found = pq.read_metadata(path).num_rows
    if found != rows:
        raise corrupt_artifact(path, f"{found} rows, but {MANIFEST} lists {rows}")
    with reading(path, "unreadable Parquet"):
        table = pq.read_table(path, columns=["image_id", "split", "label", "vector"], filters=filters,
                              page_checksum_verification=True)
    vtype = table.schema.field("vector").type
    if not pa.types.is_fixed_size_list(vtype) or vtype.list_size != dim or table["vector"].null_count:
        raise corrupt_artifact(path, f"vectors of type {vtype} (nulls: {table['vector'].null_count}); "
                                     f"{MANIFEST} says {dim} floats per row")
    return table
