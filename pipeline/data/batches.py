"""The training data path: batches gathered from the memory-mapped pixel store
with index arrays, moved to the device as uint8, and augmented there as tensors.

A background thread gathers (and pins) the next batch while the model works on
the current one. Augmentation draws from a ``torch.Generator`` seeded by the
caller from (seed, epoch), so an epoch's augmentations are reproducible.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from pipeline.data.pixel_store import gather
from pipeline.errors import ConfigError
from pipeline.data.settings import AugmentSettings


def to_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, H, W, C)`` -> float ``(B, C, H, W)`` in [0, 1].

    The permuted view keeps NHWC memory order, i.e. the result is already in
    ``channels_last`` format, which is what the convolutions prefer.
    """
    return batch.permute(0, 3, 1, 2).float().div_(255.0)


def _reflect_index(n: int, pad: int, device: torch.device) -> torch.Tensor:
    """Source rows of a reflect-padded axis: pad..1, 0..n-1, n-2..n-1-pad."""
    i = torch.arange(-pad, n + pad, device=device).abs()
    return torch.where(i > n - 1, 2 * (n - 1) - i, i)


def augment(x: torch.Tensor, settings: AugmentSettings, generator: torch.Generator) -> torch.Tensor:
    """Random crop (of a reflect-padded image) and horizontal flip, per sample.

    Works on uint8 ``(B, H, W, C)`` batches, before the float conversion, so it
    moves a quarter of the bytes. The random draws come from ``generator`` on
    the batch's device; the copy is then done per sample with numpy slices on
    the CPU (cheapest there) or per distinct crop offset on a GPU (at most
    ``(2p+1)^2`` kernel launches). Both give the same result for the same draws.
    """
    if not settings.augment:
        return x
    b, h, w, _ = x.shape
    dev = x.device
    p = settings.crop_padding
    if p >= min(h, w):
        raise ConfigError(f"[TrainEpoch] crop_padding = {p}; it must be smaller than the image size {min(h, w)}")
    offsets = torch.randint(0, (2 * p + 1) ** 2, (b,), generator=generator, device=dev)
    flips = torch.rand(b, generator=generator, device=dev) < 0.5
    if not settings.flip:
        flips = torch.zeros_like(flips)
    if dev.type == "cpu":
        return torch.from_numpy(_augment_numpy(x.numpy(), p, offsets.tolist(), flips.tolist()))
    return _augment_grouped(x, p, offsets, flips)


def _augment_grouped(x: torch.Tensor, p: int, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    _, h, w, _ = x.shape
    dev = x.device
    padded = x[:, _reflect_index(h, p, dev)][:, :, _reflect_index(w, p, dev)] if p else x
    out = torch.empty_like(x)
    for code in torch.unique(offsets).tolist():
        sel = (offsets == code).nonzero().squeeze(1)
        oy, ox = divmod(code, 2 * p + 1)
        out[sel] = padded[sel, oy : oy + h, ox : ox + w]
    idx = flips.nonzero().squeeze(1)
    out[idx] = out[idx].flip(2)
    return out


def _augment_numpy(x: np.ndarray, p: int, offsets: list[int], flips: list[bool]) -> np.ndarray:
    _, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect") if p else x
    offsets_a = np.asarray(offsets, dtype=np.int64)
    out = np.empty_like(x)
    # One vectorised copy per distinct offset: at most (2p+1)^2 of them per batch.
    for code in np.unique(offsets_a).tolist():
        sel = np.flatnonzero(offsets_a == code)
        oy, ox = divmod(code, 2 * p + 1)
        out[sel] = padded[sel, oy : oy + h, ox : ox + w]
    flip = np.flatnonzero(np.asarray(flips, dtype=bool))
    out[flip] = out[flip, :, ::-1]
    return out


def iterate_batches(
    store: np.ndarray, id_batches: Sequence[np.ndarray], *, pin: bool = False, prefetch: int = 2,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[torch.Tensor]:
    """Yield uint8 ``(B, H, W, C)`` tensors for each array of image ids, prefetched.

    ``transform`` (e.g. CPU augmentation) runs in the prefetch thread, in batch
    order, so it overlaps with the model's work and stays deterministic.
    """
    def load(ids: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(gather(store, ids))
        return transform(t) if transform is not None else t

    if prefetch <= 0:
        for ids in id_batches:
            yield load(ids)
        return
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def work() -> None:
        try:
            for ids in id_batches:
                t = load(ids)
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
