"""``[AuditEpoch]`` settings and whether a saved audit was made with them; apart from
the audit code so that declaring and scheduling tasks imports neither torch nor pandas."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pipeline import paths

from pipeline.knn import BACKENDS
from pipeline.settings import check, setting


@dataclass(frozen=True)
class AuditSettings:
    """``[AuditEpoch]``: how the audit reads the saved epochs."""

    k: int = setting(20, "nearest training images that vote on each image's label", minimum=1)
    epochs: int = setting(5, "saved epochs pooled: this one and others spread evenly back to epoch 1",
                          minimum=1)
    quality_floor: float = setting(0.5, "an image is also a suspect when its label quality is below this share of "
                                   "its class's threshold (0: only when another class confidently claims it)",
                                   minimum=0.0, maximum=1.0)
    duplicate_ratio: float = setting(0.05, "near duplicates: embedding distance at most this share of the "
                                     "median nearest-neighbour distance", minimum=0.0)
    knn_backend: str = setting("auto", "exact kNN engine: auto (float64 where k is large, else faiss when "
                               "installed), faiss, torch or float64",
                               choices=BACKENDS, run_only=True)

    def check(self) -> None:
        check(self, "AuditEpoch")


def pooled_epochs(epoch: int, count: int) -> list[int]:
    """The saved epochs the audit of ``epoch`` pools, newest first: ``epoch`` itself and
    others spread evenly back to epoch 1 (epoch 0's random network never votes, unless it
    is the one audited). Early epochs matter: a network memorises wrong labels as it
    trains, and the epochs before it did still place those images among their true class."""
    if epoch < 1:
        return [epoch]
    return sorted({round(epoch - i * (epoch - 1) / max(count - 1, 1)) for i in range(count)}, reverse=True)


def audit_is_current(audit_file: str | Path, recorded: Mapping[str, Any]) -> bool:
    """Whether the audit summary ``audit_file`` exists (it is written after the tables) and was
    made with the settings ``recorded``, so a changed ``[AuditEpoch]`` setting or label noise reaudits."""
    summary = Path(audit_file)
    if not all(p.is_file() for p in paths.audit_files(summary)):
        return False
    try:
        return json.loads(summary.read_text()).get("settings") == dict(recorded)
    except (OSError, ValueError):
        return False
