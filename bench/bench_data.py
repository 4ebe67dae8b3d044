"""Data-path throughput: packed pixel store + tensor augmentation against a
torchvision ImageFolder + PIL DataLoader over the same images as JPEGs.

    .venv/bin/python bench/bench_data.py [--images 20000 --size 64 --batch 256] [--quick]

Both paths produce augmented float (B, 3, H, W) batches (random crop with
padding + horizontal flip) in random order; no model. Prints images/s and the ratio.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import common  # noqa: F401  (puts the repo on sys.path)
import numpy as np
import torch
from common import best_of

from pipeline.data.batches import augment, iterate_batches, to_float
from pipeline.data.pixel_store import create_store
from pipeline.data.settings import AugmentSettings


def make_data(root: Path, n: int, size: int, classes: int) -> tuple[np.ndarray, Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    store = create_store(root / "pixels.npy", n, size)
    folder = root / "train"
    for i in range(n):
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        img[: size // 2] //= 2  # some structure so JPEG sizes are realistic
        store[i] = img
        d = folder / f"c{i % classes:03d}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i}.JPEG", quality=90)
    store.flush()
    return np.load(root / "pixels.npy", mmap_mode="r"), folder


def ours(store: np.ndarray, batch: int, epoch_images: int) -> None:
    gen = torch.Generator().manual_seed(0)
    ids = np.random.default_rng(0).permutation(len(store))[:epoch_images]
    batches = [ids[i : i + batch] for i in range(0, len(ids), batch)]
    for pixels in iterate_batches(store, batches, transform=lambda t: augment(t, AugmentSettings(), gen)):
        to_float(pixels)


def imagefolder(folder: Path, batch: int, epoch_images: int, workers: int) -> None:
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    tf = T.Compose([T.RandomCrop(64, padding=2, padding_mode="reflect"), T.RandomHorizontalFlip(), T.ToTensor()])
    ds = torch.utils.data.Subset(ImageFolder(str(folder), transform=tf), range(epoch_images))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers)
    for _x, _y in loader:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the baseline")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.images, a.repeat = 2_000, 1
    with tempfile.TemporaryDirectory() as tmp:
        store, folder = make_data(Path(tmp), a.images, a.size, 200)
        t_ours = best_of(lambda: ours(store, a.batch, a.images), a.repeat)
        t_base = best_of(lambda: imagefolder(folder, a.batch, a.images, a.workers), max(1, a.repeat - 2))
    print(f"{a.images} images of {a.size}x{a.size}, batch {a.batch}, {torch.get_num_threads()} torch threads")
    print(f"{'data path':40s} {'seconds':>8s} {'images/s':>12s}")
    print(f"{'pixel store + tensor augmentation':40s} {t_ours:8.3f} {a.images / t_ours:12,.0f}")
    print(f"{f'ImageFolder + PIL DataLoader ({a.workers} workers)':40s} {t_base:8.3f} {a.images / t_base:12,.0f}")
    print(f"speed-up: {t_base / t_ours:.1f}x")


if __name__ == "__main__":
    main()
