"""The search index of one epoch: a faiss ``IndexFlatL2`` over its embeddings, the
table that maps each index row back to an image, and a small JSON description.

    <experiment>/search/epoch-NNN/
        index.faiss     faiss.write_index of an IndexFlatL2 over float32 vectors
        items.parquet   one row per index row, in index order: image_id, split, label,
                        class_id, class_name, path (relative to the dataset root; "" if none)
        meta.json       epoch, splits, count, dim, dataset_dir, dataset_root, experiment

:func:`build_search_index` writes the folder (the ``SearchIndex`` task passes a
temporary folder and renames it); :func:`load_search_index` reads it back and
checks that the three files belong together.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data.pixel_store import read_index
from pipeline.errors import PipelineError
from pipeline.paths import SEARCH_INDEX_FILE, SEARCH_ITEMS_FILE, SEARCH_META_FILE
from pipeline.search.settings import SearchIndexSettings
from pipeline.settings import check
from pipeline.storage import corrupt_artifact, reading

ITEM_COLUMNS = ("image_id", "split", "label", "class_id", "class_name", "path")


@dataclass(frozen=True)
class SearchIndexFiles:
    """A loaded search folder: the faiss index, its row -> image table and its meta."""

    index: Any  # faiss.IndexFlatL2 (faiss has no type stubs)
    items: pd.DataFrame
    meta: dict[str, Any]


def build_search_index(embeddings_dir: str | Path, dataset_dir: str | Path, out_dir: str | Path,
                       settings: SearchIndexSettings, *, epoch: int, experiment: str,
                       dataset_root: str | Path | None) -> dict[str, Any]:
    """Index the ``settings.splits`` vectors of ``embeddings_dir`` into ``out_dir``; return the meta dict.

    ``dataset_dir`` is the indexed dataset the embeddings were made from (its
    index gives class names and source paths); ``dataset_root`` is the source's
    own folder (tiny-imagenet, image-folder), or None for the embedded arrays.
    Each file is written completely; ``meta.json`` last, as the sign the folder is whole.
    """
    # Imported here, not at the top: the search command reads meta.json before it loads torch.
    import faiss

    from pipeline.embedding.embed import load_embeddings

    check(settings, "SearchIndex")
    out_dir, dataset_dir = Path(out_dir), Path(dataset_dir).resolve()
    parts = [load_embeddings(embeddings_dir, split) for split in settings.split_list()]
    ids = np.concatenate([p.image_ids for p in parts])
    vectors = np.ascontiguousarray(np.concatenate([p.vectors for p in parts]), dtype=np.float32)
    if len(ids) == 0:
        raise PipelineError(f"the embeddings in {embeddings_dir} hold no {settings.splits} rows; "
                            "there is nothing to search")
    items = _items(dataset_dir, ids, np.concatenate([p.labels for p in parts]), embeddings_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    index = faiss.IndexFlatL2(vectors.shape[1])
    index.add(vectors)
    faiss.write_index(index, str(out_dir / SEARCH_INDEX_FILE))
    items.to_parquet(out_dir / SEARCH_ITEMS_FILE, index=False)
    meta = {
        "epoch": int(epoch),
        "splits": settings.split_list(),
        "count": len(items),
        "dim": int(vectors.shape[1]),
        "dataset_dir": str(dataset_dir),
        "dataset_root": str(Path(dataset_root).resolve()) if dataset_root else None,
        "experiment": experiment,
    }
    (out_dir / SEARCH_META_FILE).write_text(json.dumps(meta, indent=2))
    return meta


def _items(dataset_dir: Path, ids: np.ndarray, labels: np.ndarray, embeddings_dir: str | Path) -> pd.DataFrame:
    """The dataset index rows of ``ids``, in that order, with the interface's column types."""
    index = read_index(dataset_dir, columns=list(ITEM_COLUMNS)).set_index("image_id")
    missing = ~np.isin(ids, index.index.to_numpy())
    if missing.any():
        raise PipelineError(f"the embeddings in {embeddings_dir} hold image id {int(ids[missing][0])}, which the "
                            f"dataset {dataset_dir} does not list; they were made from another dataset: rebuild "
                            "them (delete the folder and rerun EmbedEpoch)")
    rows = index.loc[ids]
    if not np.array_equal(rows["label"].to_numpy(np.int64), labels):
        raise PipelineError(f"the labels in {embeddings_dir} disagree with the dataset {dataset_dir}; they were made "
                            "from another dataset: rebuild them (delete the folder and rerun EmbedEpoch)")
    return pd.DataFrame({
        "image_id": ids.astype(np.int64),
        "split": rows["split"].astype(str).to_numpy(),
        "label": labels.astype(np.int64),
        "class_id": rows["class_id"].astype(str).to_numpy(),
        "class_name": rows["class_name"].astype(str).to_numpy(),
        # The embedded arrays have no source files: their path is missing, stored as "".
        "path": rows["path"].astype("string").fillna("").astype(str).to_numpy(),
    })


def read_search_meta(folder: str | Path) -> dict[str, Any]:
    """``meta.json`` of a search folder, checked for the keys readers use."""
    path = Path(folder) / SEARCH_META_FILE
    try:
        with reading(path, "not valid JSON"):
            meta = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise PipelineError(f"search index meta {path} is missing") from exc
    keys = ("epoch", "splits", "count", "dim", "dataset_dir", "dataset_root", "experiment")
    if not isinstance(meta, dict) or any(k not in meta for k in keys):
        raise corrupt_artifact(path, f"a JSON object with the keys {', '.join(keys)} was expected")
    return meta


def load_search_index(folder: str | Path) -> SearchIndexFiles:
    """Read a search folder back; raise :class:`~pipeline.errors.CorruptArtifactError`
    (naming the file and the task that rebuilds it) when its files disagree or are damaged."""
    import faiss

    folder = Path(folder)
    meta = read_search_meta(folder)
    index_path, items_path = folder / SEARCH_INDEX_FILE, folder / SEARCH_ITEMS_FILE
    for path in (index_path, items_path):
        if not path.is_file():
            raise corrupt_artifact(path, "missing")
    with reading(index_path, "not a faiss index", also=(RuntimeError,)):  # faiss's error for every bad file
        index = faiss.read_index(str(index_path))
    with reading(items_path, "unreadable Parquet"):
        items = pd.read_parquet(items_path, columns=list(ITEM_COLUMNS))
    if index.ntotal != meta["count"] or index.d != meta["dim"]:
        raise corrupt_artifact(index_path, f"{index.ntotal} vectors of {index.d} floats, but {SEARCH_META_FILE} "
                                           f"says {meta['count']} of {meta['dim']}")
    if len(items) != meta["count"]:
        raise corrupt_artifact(items_path, f"{len(items)} rows, but {SEARCH_META_FILE} says {meta['count']}")
    return SearchIndexFiles(index=index, items=items, meta=meta)
