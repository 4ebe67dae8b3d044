"""One epoch's validation from its embedding shards: the metrics JSON and its
Parquet sidecars (per-class precision, the figure queries' neighbours, every
query's precision and neighbours, class-confusion counts)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping


from pipeline.data.label_noise import LabelNoise, flip_labels
from pipeline.embedding.embed import Embeddings, load_embeddings
from pipeline.evaluation.evaluate import evaluate_epoch
from pipeline.evaluation.settings import ValidationSettings
from pipeline.paths import VALIDATION_SIDECARS
from pipeline.storage import write_epoch_tables, write_text_atomic

if TYPE_CHECKING:
    from distributed import Client


def validate_epoch(embeddings_dir: str | Path, metrics_file: str | Path, settings: ValidationSettings, *,
                   epoch: int, recorded: Mapping[str, Any], noise: LabelNoise = LabelNoise(),
                   client: Client | None = None) -> dict[str, Any]:
    """Evaluate the shards in ``embeddings_dir`` and write ``metrics_file`` with its sidecars.

    With ``client``, the query blocks run on its dask workers; every file is the
    same as without (but for the JSON's ``seconds``). Everything is computed
    before the first file is written, so a failure on the cluster leaves no file.

    The sidecars (:data:`pipeline.paths.VALIDATION_SIDECARS`, each
    ``metrics/<name>/epoch-NNN.parquet`` with an ``epoch`` column) are
    written first and the JSON last, so the JSON's presence means the epoch's
    validation is complete; it keeps ``recorded`` (the settings that shaped the
    numbers) for :func:`metrics_are_current`. Returns the metrics.

    With label ``noise``, the metrics and sidecars are those of the labels the
    experiment trained on (the training gallery's labels flipped as sampling flipped
    them); the retrieval metrics against the true labels are added as ``<key>_true``.
    """
    started = time.perf_counter()
    train, val = load_embeddings(embeddings_dir, "train"), load_embeddings(embeddings_dir, "val")
    if noise.active:
        used = Embeddings(train.image_ids, flip_labels(train.labels, noise, settings.seed), train.vectors)
        result = evaluate_epoch(used, val, settings, client, true_labels=train.labels)
    else:
        result = evaluate_epoch(train, val, settings, client)
    out = Path(metrics_file)
    write_epoch_tables(out, {name: getattr(result, name) for name in VALIDATION_SIDECARS}, epoch)
    seconds = round(time.perf_counter() - started, 3)
    metrics = {"epoch": epoch, **result.metrics, "settings": dict(recorded), "seconds": seconds}
    write_text_atomic(out, json.dumps(metrics, indent=2))
    return metrics


