"""The training data path: batches gathered from the memory-mapped pixel store
with index arrays, moved to the device as uint8, and augmented there as tensors.

A background thread gathers (and pins) the next batch while the model works on
the current one. Augmentation draws from a ``torch.Generator`` seeded by the
caller from (seed, epoch), so an epoch's augmentations are reproducible.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.pixel_store import gather


@dataclass(frozen=True)
class AugmentSettings:
    """Random crop (pad by ``crop_padding`` then crop back) and horizontal flip."""

    crop_padding: int = 2
    flip: bool = True
    enabled: bool = True


def to_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, H, W, C)`` -> float ``(B, C, H, W)`` in [0, 1] (channels_last memory)."""
    return batch.permute(0, 3, 1, 2).float().div_(255.0)


def augment(x: torch.Tensor, settings: AugmentSettings, generator: torch.Generator) -> torch.Tensor:
    """Random-crop and flip a float ``(B, C, H, W)`` batch on its own device, per sample."""
    if not settings.enabled:
        return x
    b, _, h, w = x.shape
    dev = x.device
    p = settings.crop_padding
    if p > 0:
        padded = F.pad(x, (p, p, p, p), mode="reflect" if p < min(h, w) else "constant")
        oy = torch.randint(0, 2 * p + 1, (b,), generator=generator, device=dev)
        ox = torch.randint(0, 2 * p + 1, (b,), generator=generator, device=dev)
        rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]
        bi = torch.arange(b, device=dev)[:, None, None, None]
        ci = torch.arange(x.shape[1], device=dev)[None, :, None, None]
        x = padded[bi, ci, rows, cols]
    if settings.flip:
        flip = torch.rand(b, generator=generator, device=dev) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x.contiguous(memory_format=torch.channels_last)


def iterate_batches(
    store: np.ndarray, id_batches: Sequence[np.ndarray], *, pin: bool = False, prefetch: int = 2
) -> Iterator[torch.Tensor]:
    """Yield uint8 ``(B, H, W, C)`` tensors for each array of image ids, prefetched."""
    if prefetch <= 0:
        for ids in id_batches:
            yield torch.from_numpy(gather(store, ids))
        return
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def work() -> None:
        try:
            for ids in id_batches:
                t = torch.from_numpy(gather(store, ids))
                if pin:
                    t = t.pin_memory()
                while not stop.is_set():
                    try:
                        q.put(t, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(None)
        except BaseException as exc:  # surfaced in the consumer
            q.put(exc)

    thread = threading.Thread(target=work, daemon=True, name="batch-prefetch")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
