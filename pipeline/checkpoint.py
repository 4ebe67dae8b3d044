"""Checkpoints in torchvision's reference style: one dict with model, optimizer,
scheduler, epoch, RNG states and the resolved config, written atomically."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.atomic import atomic_path
from pipeline.errors import PipelineError


def rng_state() -> dict[str, Any]:
    """The process's RNG states, saved so a resumed run can inspect or restore them."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def to_cpu(obj: Any) -> Any:
    """Every tensor in a nested dict/list moved to the CPU (so a checkpoint written
    on a GPU loads with a plain ``torch.load`` anywhere)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` of the state (tensors on the CPU) through a temporary file renamed into place."""
    with atomic_path(path) as tmp:
        torch.save(to_cpu(state), tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint on the CPU (tensors are moved by the caller)."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as exc:
        raise PipelineError(f"checkpoint {path} cannot be read ({exc}); delete it to retrain that epoch") from exc
