"""Step time of distributed training (2 gloo ranks) against one process on the same machine.

    .venv/bin/python bench/bench_ddp.py [--steps 30 --batch 64 --size 28 --width 16 --ranks 2] [--quick]

Both train the same plain triplet list (``batch`` triplets, 3 x batch images per
step) through ``train_one_epoch``; the ranks split each step's images and
all-gather the embeddings (:mod:`pipeline.distributed.split`), with synchronised
batch norm and DistributedDataParallel. One process uses every core; each rank
gets its share of them. Spawning and the rendezvous are left out: the figure is
seconds per step after a warm-up step. On a machine whose cores the single process
already uses, the ratio is the cost of the collectives, not a speed-up; with one
GPU per rank it is the scaling.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts the repo on sys.path)
import numpy as np
import torch

from pipeline.data.pixel_store import create_store
from pipeline.distributed.launch import launch, make_plan
from pipeline.distributed.settings import DistributedSettings
from pipeline.network import ModelSettings, build_model
from pipeline.training.loop import train_one_epoch
from pipeline.training.optimization import make_optimizer
from pipeline.training.settings import TrainSettings
from pipeline.data.settings import AugmentSettings


def step_seconds(store_file: str, triplets: np.ndarray, settings: ModelSettings, batch: int, ctx=None) -> float:
    """Median seconds per step after the first (one process, or rank ``ctx``)."""
    torch.manual_seed(0)
    net = build_model(settings).to(memory_format=torch.channels_last)
    model = ctx.wrap(net) if ctx is not None else net
    train = TrainSettings(batch_size=batch)
    log = train_one_epoch(model, make_optimizer(net, train), triplets, np.load(store_file, mmap_mode="r"), train,
                          epoch=1, seed=0, device=torch.device("cpu"), augment_settings=AugmentSettings(),
                          show_bar=False, shard=ctx.shard if ctx is not None else None)
    return float(log["seconds"].iloc[1:].median())


def _rank(ctx, store_file: str, triplets: np.ndarray, settings: ModelSettings, batch: int) -> float:
    return step_seconds(store_file, triplets, settings, batch, ctx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.steps = 4
    cores = os.cpu_count() or 1
    settings = ModelSettings(width=a.width, stem="small-s2", embedding_dim=64)
    rng = np.random.default_rng(0)
    n_images = 5000
    triplets = rng.integers(0, n_images, (a.steps * a.batch, 3))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pixels.npy"
        store = create_store(path, n_images, a.size)
        store[:] = rng.integers(0, 256, store.shape, dtype=np.uint8)
        store.flush()
        one = {}
        for threads in sorted({1, cores}):
            torch.set_num_threads(threads)
            one[threads] = step_seconds(str(path), triplets, settings, a.batch)
        plan = make_plan(DistributedSettings(processes=a.ranks, timeout_s=300), torch.device("cpu"), 0, "bench")
        started = time.perf_counter()
        ranks = launch(_rank, (str(path), triplets, settings, a.batch), plan)
        wall = time.perf_counter() - started
    print(f"resnet18 width {a.width}, {a.size}x{a.size}, {3 * a.batch} images per step, {a.steps} steps, "
          f"{cores} cores")
    print(f"{'training':40s} {'s/step':>8s} {'images/s':>9s}")
    for threads, seconds in one.items():
        print(f"{f'1 process, {threads} thread(s)':40s} {seconds:8.3f} {3 * a.batch / seconds:9,.0f}")
    print(f"{f'{a.ranks} gloo ranks, {plan.threads} thread(s) each':40s} {ranks:8.3f} {3 * a.batch / ranks:9,.0f}")
    print(f"ratio, step time of {a.ranks} ranks / 1 process with all {cores} cores: {ranks / one[cores]:.2f}; "
          f"/ 1 process with 1 thread: {ranks / one[1]:.2f} (ideal 1/{a.ranks} with a core per rank)")
    print(f"launching the ranks (spawn, imports, rendezvous) took {wall:.1f} s")


if __name__ == "__main__":
    main()
