"""Reading and writing per-epoch triplet lists (one Parquet dataset per epoch).

Read one epoch with ``pd.read_parquet("artifacts/demo/triplets/epoch=001")``, or
all epochs with ``pd.read_parquet("artifacts/demo/triplets", partitioning=None)``
(the files carry their own ``epoch`` column).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import PipelineError

PART = "part-00000.parquet"
META_KEY = b"deep_ranking"


def write_triplet_list(out_dir: str | Path, table: pa.Table, meta: dict) -> Path:
    """Write ``table`` into ``out_dir`` (a temporary folder the caller renames)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[META_KEY] = json.dumps(meta, default=str).encode()
    path = out_dir / PART
    pq.write_table(table.replace_schema_metadata(schema_meta), path, row_group_size=1 << 20)
    return path


def read_triplet_meta(triplet_dir: str | Path) -> dict:
    """The metadata (strategy, seconds, settings) stored in a triplet list's schema."""
    meta = pq.read_schema(Path(triplet_dir) / PART).metadata or {}
    return json.loads(meta.get(META_KEY, b"{}"))


def read_triplets(triplet_dir: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """One epoch's triplet list as a DataFrame."""
    path = Path(triplet_dir) / PART
    if not path.is_file():
        raise PipelineError(f"triplet list {path} is missing; run the TripletList task for that epoch")
    return pq.read_table(path, columns=columns).to_pandas()


def triplet_ids(triplet_dir: str | Path) -> np.ndarray:
    """``(T, 3)`` int64 array of (query, positive, negative) image ids, in file order."""
    t = pq.read_table(Path(triplet_dir) / PART, columns=["query", "positive", "negative"])
    return np.stack([t[c].to_numpy() for c in ("query", "positive", "negative")], axis=1)
