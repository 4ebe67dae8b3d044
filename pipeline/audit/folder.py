"""One epoch's audit folder: read the saved artifacts, audit, write
``images.parquet``, ``duplicates.parquet`` and ``summary.json`` (last); and read it back."""

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

if TYPE_CHECKING:
    from distributed import Client


def audit_epoch(dataset_dir: str | Path, embeddings_dirs: Sequence[str | Path], out_dir: str | Path,
                settings: AuditSettings, *, noise: LabelNoise, seed: int,
                recorded: Mapping[str, Any], client: Client | None = None) -> dict[str, Any]:
    """Audit the training labels the experiment uses with the embeddings in
    ``embeddings_dirs`` (the epoch first, then the ones before it) and write
    ``images.parquet``, ``duplicates.parquet`` and ``summary.json`` (last) into
    ``out_dir``; returns the summary.

    The given labels are the dataset's with the experiment's ``noise`` flipped
    (:func:`~pipeline.data.label_noise.flip_labels`, as sampling flips them); the
    true ones only score the suspects, and only when labels were flipped.
    ``recorded`` (the settings that shaped it) is kept in the summary, for
    :func:`~pipeline.audit.settings.audit_is_current`. ``client``: the dask.distributed
    cluster the neighbour votes run on (none: in this process).
    """
    started = time.perf_counter()
    out = Path(out_dir)
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
    out.mkdir(parents=True, exist_ok=True)
    images.to_parquet(out / paths.AUDIT_IMAGES_FILE, index=False)
    pairs.to_parquet(out / paths.AUDIT_DUPLICATES_FILE, index=False)
    summary["settings"] = dict(recorded)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    (out / paths.AUDIT_SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary


def read_audit(audit_dir: str | Path) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """``(summary, images, duplicates)`` of a finished audit folder; a clear error when it has none."""
    audit_dir = Path(audit_dir)
    summary_file = audit_dir / paths.AUDIT_SUMMARY_FILE
    if not summary_file.is_file():  # written last: without it the folder is no finished audit
        raise PipelineError(f"no audit in {audit_dir}: run luigi --module tasks AuditEpoch --epoch "
                            f"{audit_dir.name.split('=')[-1].lstrip('0') or '0'} first")
    return (json.loads(summary_file.read_text()), pd.read_parquet(audit_dir / paths.AUDIT_IMAGES_FILE),
            pd.read_parquet(audit_dir / paths.AUDIT_DUPLICATES_FILE))


def top_suspects(images: pd.DataFrame, n: int) -> pd.DataFrame:
    """The ``n`` suspect labels of an audit's ``images`` table the audit trusts least
    (lowest label quality, ties by image id)."""
    flagged = images[images["suspect"]]
    return flagged.sort_values(["quality", "image_id"], kind="stable").head(n).reset_index(drop=True)
