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

from pipeline.artifact_damage import corrupt_artifact, is_damage
from pipeline.errors import PipelineError
from pipeline.paths import TRIPLET_LIST_FILE as PART

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


def triplet_ids(triplet_dir: str | Path) -> np.ndarray:
    """``(T, 3)`` int64 array of (query, positive, negative) image ids, in file order.

    Raises :class:`~pipeline.errors.CorruptArtifactError` if the file is
    truncated or overwritten, or its id columns are not non-null integers.
    """
    path = _part(triplet_dir)
    return _ids(_read(path, list(_ID_COLUMNS)), path)


def read_list(triplet_dir: str | Path) -> tuple[pa.Table, np.ndarray]:
    """The whole list in one read, and its ``(T, 3)`` int64 (query, positive, negative) ids.

    Raises :class:`~pipeline.errors.CorruptArtifactError` if the file is
    damaged, naming it and the task that rebuilds it.
    """
    path = _part(triplet_dir)
    table = _read(path, None)
    return table, _ids(table, path)
