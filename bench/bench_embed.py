"""Embedding throughput of ``embed_images`` (the EmbedEpoch path) against a bare
``model(x)`` loop over tensors already in memory.

    .venv/bin/python bench/bench_embed.py [--images 8192 --batch 512 --size 28] [--quick]

Prints images/s of both and the ratio (target >= 0.95).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts the repo on sys.path)
import numpy as np
import torch

from pipeline.network import ModelSettings, build_model
from pipeline.data.pixel_store import create_store
from pipeline.embedding.embed import embed_images


@torch.no_grad()
def bare_loop(model: torch.nn.Module, batches: list[torch.Tensor]) -> np.ndarray:
    model.eval()
    return np.concatenate([model(x).numpy() for x in batches])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--stem", default="small-s2")
    ap.add_argument("--repeat", type=int, default=6)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.images, a.repeat = 1024, 1
    torch.manual_seed(0)
    model = build_model(ModelSettings(width=a.width, stem=a.stem, embedding_dim=64)).to(
        memory_format=torch.channels_last)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = create_store(Path(tmp) / "pixels.npy", a.images, a.size)
        store[:] = rng.integers(0, 256, store.shape, dtype=np.uint8)
        store.flush()
        store = np.load(Path(tmp) / "pixels.npy", mmap_mode="r")
        ids = np.arange(a.images)
        batches = [torch.from_numpy(np.array(store[i : i + a.batch])).permute(0, 3, 1, 2).float().div(255)
                   for i in range(0, a.images, a.batch)]
        ours_t, bare_t = [], []
        for _ in range(a.repeat + 1):  # first round warms up
            t = time.perf_counter()
            ours = embed_images(model, store, ids, batch_size=a.batch, show_bar=False)
            ours_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            bare = bare_loop(model, batches)
            bare_t.append(time.perf_counter() - t)
    assert np.allclose(ours, bare, atol=1e-4), "embeddings differ from the bare loop"
    o, b = min(ours_t[1:]), min(bare_t[1:])
    print(f"resnet18 width {a.width} stem {a.stem}, {a.images} images of {a.size}x{a.size}, batch {a.batch}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'loop':34s} {'seconds':>8s} {'images/s':>10s}")
    print(f"{'embed_images (EmbedEpoch path)':34s} {o:8.3f} {a.images / o:10,.0f}")
    print(f"{'bare model(x), tensors in memory':34s} {b:8.3f} {a.images / b:10,.0f}")
    print(f"ratio (ours / bare throughput): {b / o:.3f}")


if __name__ == "__main__":
    main()
