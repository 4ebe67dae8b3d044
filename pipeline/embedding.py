"""Embedding every image of a dataset with a trained network, and the Parquet
shards that hold the vectors (``image_id``, ``split``, ``label``, ``vector``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn
from tqdm.auto import tqdm

from pipeline.batches import iterate_batches, to_float
from pipeline.device import autocast
from pipeline.errors import ConfigError, PipelineError

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Embeddings:
    """Vectors of one split, row-aligned with ``image_ids`` and ``labels``."""

    image_ids: np.ndarray
    labels: np.ndarray
    vectors: np.ndarray


@torch.no_grad()
def embed_images(
    model: nn.Module, store: np.ndarray, image_ids: np.ndarray, *, batch_size: int = 512,
    device: torch.device = torch.device("cpu"), show_bar: bool = True,
) -> np.ndarray:
    """Float32 ``(len(image_ids), D)`` embeddings in eval mode, without augmentation."""
    if batch_size < 1:
        raise ConfigError(f"[EmbedEpoch] batch_size = {batch_size}; it must be at least 1")
    model.eval()
    ids = np.asarray(image_ids, dtype=np.int64)
    batches = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
    on_cpu = device.type == "cpu"
    # On the CPU the float conversion runs in the prefetch thread, overlapping the
    # model; on a GPU uint8 crosses the bus (4x fewer bytes) and converts there.
    loader = iterate_batches(store, batches, pin=not on_cpu, transform=to_float if on_cpu else None)
    dim = None
    out = None
    row = 0
    for pixels in tqdm(loader, total=len(batches), desc="embed", unit="batch", disable=not show_bar, leave=False,
                       mininterval=2.0):
        x = pixels if on_cpu else to_float(pixels.to(device, non_blocking=True))
        with autocast(device):
            z = model(x).float().cpu().numpy()
        if out is None:
            dim = z.shape[1]
            out = np.empty((len(ids), dim), np.float32)
        out[row : row + len(z)] = z
        row += len(z)
    return out if out is not None else np.zeros((0, 0), np.float32)


def write_shards(out_dir: str | Path, index: pd.DataFrame, vectors: np.ndarray, *,
                 rows_per_shard: int = 50_000, extra: dict | None = None) -> dict:
    """Write ``vectors`` (aligned with ``index`` rows) as Parquet shards plus a manifest.

    ``index`` needs ``image_id``, ``split`` and ``label``. ``out_dir`` should be a
    temporary folder that the caller renames into place.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dim = int(vectors.shape[1])
    shards = []
    for k, lo in enumerate(range(0, len(index), rows_per_shard)):
        part = index.iloc[lo : lo + rows_per_shard]
        flat = pa.array(np.ascontiguousarray(vectors[lo : lo + rows_per_shard], dtype=np.float32).reshape(-1))
        table = pa.table({
            "image_id": pa.array(part["image_id"].to_numpy(np.int64)),
            "split": pa.array(part["split"].astype(str).to_numpy()).dictionary_encode(),
            "label": pa.array(part["label"].to_numpy(np.int32)),
            "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
        })
        name = f"part-{k:05d}.parquet"
        pq.write_table(table, out_dir / name)
        shards.append({"file": name, "rows": len(part)})
    manifest = {
        "dim": dim,
        "rows": int(len(index)),
        "splits": {str(k): int(v) for k, v in index["split"].value_counts().sort_index().items()},
        "shards": shards,
        **(extra or {}),
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def read_manifest(emb_dir: str | Path) -> dict:
    """The manifest of an embedding folder."""
    path = Path(emb_dir) / MANIFEST
    if not path.is_file():
        raise PipelineError(f"embedding manifest {path} is missing; run EmbedEpoch for that epoch first")
    return json.loads(path.read_text())


def load_embeddings(emb_dir: str | Path, split: str | None = None) -> Embeddings:
    """Load one split's shards (or all rows) into one float32 array, sorted by image id."""
    emb_dir = Path(emb_dir)
    manifest = read_manifest(emb_dir)
    filters = [("split", "=", split)] if split else None
    tables = [pq.read_table(emb_dir / s["file"], filters=filters) for s in manifest["shards"]]
    table = pa.concat_tables(tables) if tables else None
    if table is None or table.num_rows == 0:
        return Embeddings(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, manifest["dim"]), np.float32))
    ids = table["image_id"].to_numpy()
    vec = table["vector"].combine_chunks().flatten().to_numpy().reshape(-1, manifest["dim"])
    order = np.argsort(ids, kind="stable")
    return Embeddings(ids[order], table["label"].to_numpy().astype(np.int64)[order],
                      np.ascontiguousarray(vec[order], dtype=np.float32))
