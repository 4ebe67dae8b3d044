"""Training throughput of the TrainEpoch code path against a bare PyTorch loop.

    .venv/bin/python bench/bench_train.py [--steps 30 --batch 64 --size 28] [--quick]

Same model, batch size and number of steps. Ours: ``train_one_epoch`` over a
triplet array with batches gathered from a memory-mapped pixel store, tensor
augmentation, loss bookkeeping and the step log. Baseline: a loop over float
tensors already in memory (forward, triplet loss, backward, step). Prints
triplets/s of both and the ratio (target >= 0.95).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts the repo on sys.path)
import numpy as np
import torch

from pipeline.data.pixel_store import create_store
from pipeline.network import ModelSettings, build_model
from pipeline.training.loop import train_one_epoch
from pipeline.training.losses import triplet_loss
from pipeline.training.optimization import make_optimizer
from pipeline.training.settings import TrainSettings


def bare_loop(model: torch.nn.Module, opt: torch.optim.Optimizer, batches: list[torch.Tensor]) -> None:
    model.train()
    for x in batches:
        z = model(x)
        b = z.shape[0] // 3
        z = z.view(b, 3, -1)
        loss = triplet_loss(z[:, 0], z[:, 1], z[:, 2])[0].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--stem", default="small-s2")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.steps, a.repeat = 5, 1
    settings = ModelSettings(width=a.width, stem=a.stem, embedding_dim=64)
    n_images = 5000
    rng = np.random.default_rng(0)
    triplets = rng.integers(0, n_images, (a.steps * a.batch, 3))
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        store = create_store(Path(tmp) / "pixels.npy", n_images, a.size)
        store[:] = rng.integers(0, 256, store.shape, dtype=np.uint8)
        store.flush()
        store = np.load(Path(tmp) / "pixels.npy", mmap_mode="r")
        batches = [torch.rand(3 * a.batch, 3, a.size, a.size).contiguous(memory_format=torch.channels_last)
                   for _ in range(a.steps)]
        ours_t, bare_t = [], []
        for r in range(a.repeat + 1):  # first round warms up
            torch.manual_seed(0)
            model = build_model(settings).to(memory_format=torch.channels_last)
            opt = make_optimizer(model, TrainSettings())
            t = time.perf_counter()
            train_one_epoch(model, opt, triplets, store, TrainSettings(batch_size=a.batch), epoch=1, seed=0,
                            device=device, show_bar=False)
            ours_t.append(time.perf_counter() - t)
            torch.manual_seed(0)
            model = build_model(settings).to(memory_format=torch.channels_last)
            opt = make_optimizer(model, TrainSettings())
            t = time.perf_counter()
            bare_loop(model, opt, batches)
            bare_t.append(time.perf_counter() - t)
    ours, bare = min(ours_t[1:] or ours_t), min(bare_t[1:] or bare_t)
    n = a.steps * a.batch
    print(f"resnet18 width {a.width} stem {a.stem}, {a.size}x{a.size}, batch {a.batch} triplets, {a.steps} steps, "
          f"{torch.get_num_threads()} threads")
    print(f"{'loop':36s} {'seconds':>8s} {'triplets/s':>11s}")
    print(f"{'TrainEpoch path (train_one_epoch)':36s} {ours:8.3f} {n / ours:11,.1f}")
    print(f"{'bare PyTorch loop, tensors in memory':36s} {bare:8.3f} {n / bare:11,.1f}")
    print(f"ratio (ours / bare throughput): {bare / ours:.3f}")


if __name__ == "__main__":
    main()
