"""Partial checkpoints: restart an interrupted training epoch at the step it reached.

While an epoch trains, its progress (model, optimizer, steps done and their
step-log rows) is saved now and then to a hidden file beside the epoch's final
folder, ``train/.partial-epoch-NNN.pt``. The hidden name means no reader ever
takes it for a finished epoch. A rerun of the epoch continues from it when its
fingerprint matches (same triplet list, same settings); the augmentation RNG
is seeded per step, so the remaining steps are exactly those an uninterrupted
run would take. The file is removed once the epoch's folder is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from pipeline import paths
from pipeline.checkpoint import load_checkpoint, save_checkpoint
from pipeline.errors import PipelineError
from pipeline.training.loop import STEP_LOG_COLUMNS, EpochProgress

log = logging.getLogger(__name__)


def partial_path(train_dir: str | Path) -> Path:
    """``train/epoch-NNN`` -> ``train/.partial-epoch-NNN.pt``."""
    return paths.partial_checkpoint(train_dir)


def fingerprint(triplets: np.ndarray, settings: Mapping[str, Any]) -> str:
    """A digest of what an epoch trains on and how: a partial checkpoint only
    resumes an epoch with the same triplet list (rows and order) and settings."""
    h = hashlib.sha256(np.ascontiguousarray(triplets, dtype=np.int64).tobytes())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


def save_partial(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, progress: EpochProgress,
                 digest: str) -> None:
    """Write the epoch's progress atomically (a kill during the write keeps the previous one)."""
    save_checkpoint(path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                           "step": progress.step, "rows": [list(r) for r in progress.rows], "fingerprint": digest})
    log.info("saved progress at step %d to %s", progress.step, path)


def load_partial(path: str | Path, digest: str) -> tuple[dict[str, Any], EpochProgress] | None:
    """The saved state and progress to resume from, or None when there is none to use.

    A partial checkpoint written for another triplet list or other settings, or
    a damaged one, is set aside (a warning says so) and the epoch starts over.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = load_checkpoint(path)
    except PipelineError as exc:
        log.warning("ignoring the damaged partial checkpoint %s (%s); the epoch starts over", path, exc)
        return None
    if state.get("fingerprint") != digest:
        log.warning("ignoring %s: it was written for another triplet list or other settings; the epoch starts over",
                    path)
        return None
    progress = EpochProgress(step=int(state["step"]), rows=tuple(tuple(r) for r in state["rows"]))
    if any(len(r) != len(STEP_LOG_COLUMNS) for r in progress.rows):
        log.warning("ignoring %s: its step log has other columns than %s (an older version wrote it); "
                    "the epoch starts over", path, ", ".join(STEP_LOG_COLUMNS))
        return None
    log.info("resuming from %s at step %d", path, progress.step)
    return state, progress


def remove_partial(path: str | Path) -> None:
    Path(path).unlink(missing_ok=True)


