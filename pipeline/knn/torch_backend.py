"""The torch candidate search: a tiled ``||q||^2 - 2 q.x + ||x||^2`` expansion with
``topk``, on the CPU or a GPU, in true float32 whatever the caller's precision settings."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import ConfigError
from pipeline.knn import limits

if TYPE_CHECKING:
    import torch


def torch_search(
    queries: np.ndarray,
    database: np.ndarray,
    want: int,
    farthest: bool,
    exclude: np.ndarray | None,
    block_size: int,
    device: str | None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(first_row, squared_distances, indices)`` of the ``want`` best candidates per query block.

    Each query block is compared with database tiles; every tile's best are
    merged into a running best ``want``, so no full block x database matrix is
    built. Excluded rows get the worst value (the caller drops them if returned).
    """
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch_device(device)
    db = _as_tensor(database, dev)
    # A tile never narrower than want, so each tile can supply a full set of candidates.
    tile = max(want, limits.TORCH_TILE_ELEMENTS // min(block_size, max(len(queries), 1)))
    # Excluded entries get a value topk never prefers over a real distance.
    worst = float("-inf") if farthest else float("inf")
    with torch.inference_mode(), _full_float32(dev):
        db_sq = (db * db).sum(dim=1)
        for start in range(0, len(queries), block_size):
            q = _as_tensor(queries[start : start + block_size], dev)
            rows = torch.arange(len(q), device=dev)
            skip = None if exclude is None else torch.from_numpy(exclude[start : start + len(q)]).to(dev)
            best_val = best_idx = None
            for lo in range(0, len(db), tile):
                hi = min(lo + tile, len(db))
                # ||x||^2 - 2 q.x: the per-query ||q||^2 does not change the ranking,
                # so it is added only to the candidates.
                part = torch.addmm(db_sq[lo:hi].unsqueeze(0), q, db[lo:hi].T, alpha=-2.0)
                if skip is not None:
                    inside = (skip >= lo) & (skip < hi)
                    part[rows[inside], skip[inside] - lo] = worst
                val, idx = torch.topk(part, min(want, hi - lo), dim=1, largest=farthest, sorted=False)
                idx += lo
                if best_val is not None:
                    val = torch.cat([best_val, val], dim=1)
                    idx = torch.cat([best_idx, idx], dim=1)
                    val, pick = torch.topk(val, want, dim=1, largest=farthest, sorted=False)
                    idx = torch.gather(idx, 1, pick)
                best_val, best_idx = val, idx
                del part
            squared = best_val + (q * q).sum(dim=1, keepdim=True)
            yield start, squared.cpu().numpy(), best_idx.cpu().numpy().astype(np.int64, copy=False)


def torch_device(device: str) -> torch.device:
    """``device`` as a torch device, checked by placing a tensor there; a :class:`ConfigError`
    names it when this machine has no such device."""
    import torch

    try:
        dev = torch.device(device)
        torch.zeros(1, device=dev)
    except (RuntimeError, AssertionError) as error:
        raise ConfigError(
            f"knn_search: cannot use torch device {device!r} ({error}); pass device='cpu' "
            "or a device this machine has."
        ) from error
    return dev


@contextlib.contextmanager
def _full_float32(dev: torch.device) -> Iterator[None]:
    """On CUDA, matrix products in true float32: no TF32 (10-bit mantissa) and no autocast.

    The error bound used to detect near-ties (``limits.EXPANSION_ERROR``) assumes float32
    arithmetic; a caller's global TF32 setting or autocast region would break it.
    """
    import torch

    if dev.type != "cuda":
        yield
        return
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.autocast("cuda", enabled=False):
            yield
    finally:
        torch.set_float32_matmul_precision(precision)


def _as_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Share memory with ``array`` on CPU; we only read it, so a read-only array is fine."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array).to(device)
