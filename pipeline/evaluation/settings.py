"""The settings of validation (``[ValidateEpoch]``) and of the raw-pixel baseline
(``[PixelBaseline]``), and whether saved metrics were computed with them. Apart
from the code so that declaring and scheduling tasks imports neither torch nor pandas."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pipeline.evaluation.gallery import INDEXES
from pipeline.knn import BACKENDS
from pipeline.paths import validation_files
from pipeline.settings import setting, significant


@dataclass(frozen=True)
class ValidationSettings:
    """``k`` = the course's 30; ``train_queries`` = seeded training sample for the
    training accuracy; ``figure_*`` = queries (from distinct classes) and neighbours
    kept for the figures; ``triplets`` = seeded validation triplets."""

    k: int = setting(30, "neighbours of precision@k (the course: 30)", minimum=1)
    train_queries: int = setting(1000, "seeded training images used as queries", minimum=1)
    figure_queries: int = setting(5, "validation queries (distinct classes) kept for figures", minimum=1)
    figure_k: int = setting(10, "nearest/farthest images shown per figure query", minimum=1)
    triplets: int = setting(2000, "seeded validation triplets for triplet precision", minimum=1)
    knn_backend: str = setting("auto", "exact kNN engine: auto (float64 where k is large, else faiss when "
                               "installed), faiss, torch or float64",
                               choices=BACKENDS, run_only=True)
    index: str = setting("flat", "the validation search: flat (exact) or ivf (faiss IndexIVFFlat, approximate, "
                         "for large galleries; the metrics then record its recall@k against exact search)",
                         choices=INDEXES)
    nlist: int = setting(1024, "index = ivf: k-means lists (at most the training rows; about 4 * sqrt(rows))",
                         minimum=1)
    nprobe: int = setting(16, "index = ivf: lists each query scans (R-precision and MAP@R: more where they hold "
                          "fewer than the query's R neighbours)", minimum=1)
    recall_queries: int = setting(1000, "index = ivf: seeded validation queries whose recall@k against exact "
                                  "search is recorded", minimum=1)
    # Not a setting of its own: [run] seed.
    seed: int = 0

    def recorded(self) -> dict[str, Any]:
        """The settings that shape the metrics, as the metrics JSON records them: the ivf
        ones only with ``index = ivf`` (exact metrics do not depend on them, and metrics
        recorded before the index was a setting stay current)."""
        values = significant(self)
        if self.index == "flat":
            for name in ("index", "nlist", "nprobe", "recall_queries"):
                values.pop(name)
        return values


@dataclass(frozen=True)
class BaselineSettings:
    """``[PixelBaseline]``: raw pixels as embeddings, the floor a learned embedding must beat."""

    max_size: int = setting(32, "pixels are area-downsampled to at most this size", minimum=1)


def metrics_are_current(metrics_file: str | Path, recorded: Mapping[str, Any]) -> bool:
    """Whether ``metrics_file`` and every sidecar exist and were computed with the
    settings ``recorded`` (so a changed ``[ValidateEpoch] k`` revalidates instead of
    reusing old numbers, and an epoch validated before a sidecar existed gets it)."""
    path = Path(metrics_file)
    if not all(p.is_file() for p in validation_files(path)):
        return False
    try:
        return json.loads(path.read_text()).get("settings") == dict(recorded)
    except (OSError, ValueError):
        return False
