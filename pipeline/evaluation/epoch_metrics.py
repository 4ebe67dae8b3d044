"""One epoch's validation from its embedding shards: the metrics JSON and its two
Parquet sidecars (per-class precision, the figure queries' neighbours)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from pipeline import paths
from pipeline.atomic import atomic_path, write_text_atomic
from pipeline.embedding.embed import load_embeddings
from pipeline.evaluation.evaluate import ValidationSettings, evaluate


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def validate_epoch(embeddings_dir: str | Path, metrics_file: str | Path, settings: ValidationSettings, *,
                   epoch: int, recorded: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate the shards in ``embeddings_dir`` and write ``metrics_file`` with its sidecars.

    The sidecars are written first and the JSON last, so the JSON's presence
    means the epoch's validation is complete; it keeps ``recorded`` (the settings
    that shaped the numbers) for :func:`metrics_are_current`. Returns the metrics.
    """
    started = time.perf_counter()
    metrics, per_class, neighbors = evaluate(load_embeddings(embeddings_dir, "train"),
                                             load_embeddings(embeddings_dir, "val"), settings)
    out = Path(metrics_file)
    _write_parquet(per_class, paths.metrics_sidecar(out, "per_class"))
    _write_parquet(neighbors, paths.metrics_sidecar(out, "neighbors"))
    seconds = round(time.perf_counter() - started, 3)
    metrics = {"epoch": epoch, **metrics, "settings": dict(recorded), "seconds": seconds}
    write_text_atomic(out, json.dumps(metrics, indent=2))
    return metrics


def metrics_are_current(metrics_file: str | Path, recorded: Mapping[str, Any]) -> bool:
    """Whether ``metrics_file`` exists and was computed with the settings ``recorded``
    (so a changed ``[ValidateEpoch] k`` revalidates instead of reusing old numbers)."""
    path = Path(metrics_file)
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("settings") == dict(recorded)
    except (OSError, ValueError):
        return False
