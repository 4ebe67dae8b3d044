"""One epoch's audit: read the saved artifacts, audit, write the tables
``audit/images/epoch-NNN.parquet`` and ``audit/duplicates/epoch-NNN.parquet``, then the
summary ``audit/epoch-NNN.json`` (last); and read them back."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline import paths
from pipeline.audit.findings import audit_tables, exact_duplicates
from pipeline.audit.settings import AuditSettings
from pipeline.data.label_noise import LabelNoise, flip_labels
from pipeline.data.pixel_store import open_store, read_index
from pipeline.embedding.embed import load_embeddings
from pipeline.errors import PipelineError
from pipeline.storage import reading, write_epoch_tables, write_text_atomic

if TYPE_CHECKING:
    from distributed import Client


def audit_epoch(dataset_dir: str | Path, embeddings_dirs: Sequence[str | Path], audit_file: str | Path,
                settings: AuditSettings, *, epoch: int, noise: LabelNoise, seed: int,
                recorded: Mapping[str, Any], client: Client | None = None) -> dict[str, Any]:
    """Audit the training labels the experiment uses with the embeddings in
    ``embeddings_dirs`` (the epoch first, then the ones before it) and write the
    tables (:data:`pipeline.paths.AUDIT_TABLES`, with ``epoch``) and then the
    summary ``audit_file``, each atomically; returns the summary.

    The given labels are the dataset's with the experiment's ``noise`` flipped
    (:func:`~pipeline.data.label_noise.flip_labels`, as sampling flips them); the
    true ones only score the suspects, and only when labels were flipped.
    ``recorded`` (the settings that shaped it) is kept in the summary, for
    :func:`~pipeline.audit.settings.audit_is_current`. ``client``: the dask.distributed
    cluster the neighbour votes run on (none: in this process).
    """
    started = time.perf_counter()
    index = read_index(dataset_dir, ["image_id", "split", "label"]).sort_values("image_id")
    train = [load_embeddings(d, "train") for d in embeddings_dirs]
    val = load_embeddings(embeddings_dirs[0], "val")
    ids, truth = train[0].image_ids, train[0].labels
    for d, e in zip(embeddings_dirs, train):
        if not np.array_equal(e.image_ids, ids):
            raise PipelineError(f"the training embeddings in {d} are not those of the same images as in "
                                f"{embeddings_dirs[0]}; delete that folder so EmbedEpoch rebuilds it")
    given = flip_labels(truth, noise, seed)
    exact = exact_duplicates(open_store(dataset_dir), index["image_id"].to_numpy(), index["split"].to_numpy())
    images, pairs, summary = audit_tables([e.vectors for e in train], ids, given, settings,
                                          val_vectors=val.vectors, val_ids=val.image_ids, duplicates=exact,
                                          true_labels=truth if noise.active else None, client=client)
    write_epoch_tables(audit_file, {"images": images, "duplicates": pairs}, epoch)
    summary["settings"] = dict(recorded)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    write_text_atomic(audit_file, json.dumps(summary, indent=2))
    return summary


def read_audit(audit_file: str | Path) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """``(summary, images, duplicates)`` of a finished audit; a clear error when there is none."""
    audit_file = Path(audit_file)
    if not audit_file.is_file():  # written last: without it there is no finished audit
        epoch = audit_file.stem.split("-")[-1].lstrip("0") or "0"
        raise PipelineError(f"no audit at {audit_file}: run luigi --module tasks AuditEpoch --epoch {epoch} first")
    tables = []
    for name in paths.AUDIT_TABLES:
        table = paths.table_file(audit_file, name)
        with reading(table, "unreadable Parquet"):
            tables.append(pd.read_parquet(table))
    with reading(audit_file, "unreadable JSON"):
        summary = json.loads(audit_file.read_text())
    return summary, tables[0], tables[1]


def top_suspects(images: pd.DataFrame, n: int) -> pd.DataFrame:
    """The ``n`` suspect labels of an audit's ``images`` table the audit trusts least
    (lowest label quality, ties by image id)."""
    flagged = images[images["suspect"]]
    return flagged.sort_values(["quality", "image_id"], kind="stable").head(n).reset_index(drop=True)
