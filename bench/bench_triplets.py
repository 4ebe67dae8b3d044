"""Triplet-list throughput at Tiny ImageNet scale, end to end including the Parquet write.

    .venv/bin/python bench/bench_triplets.py [--images 100000 --classes 200] [--quick]

Prints triplets/s of the vectorised, dask-parallel sampler (``sample_triplets`` +
``write_triplet_list``) next to a per-triplet Python loop baseline (the
``__getitem__`` style of a typical student implementation) measured in the same run.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import common  # noqa: F401,E402  (puts the repo on sys.path)
import numpy as np
import pandas as pd

from pipeline.sampling import ClassMembers, ListSettings, SamplingContext, get_strategy, sample_triplets
from pipeline.sampling.list_files import write_triplet_list


def loop_baseline(labels: np.ndarray, ids: np.ndarray, out: Path, seed: int) -> int:
    """One Python iteration per triplet, then a pandas Parquet write."""
    rnd = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels.tolist()):
        by_class.setdefault(y, []).append(i)
    classes = list(by_class)
    order = list(range(len(labels)))
    rnd.shuffle(order)
    rows = []
    for q in order:
        y = int(labels[q])
        p = q
        while p == q:
            p = rnd.choice(by_class[y])
        c = y
        while c == y:
            c = rnd.choice(classes)
        n = rnd.choice(by_class[c])
        rows.append((1, int(ids[q]), int(ids[p]), int(ids[n]), y, c, "uniform"))
    df = pd.DataFrame(rows, columns=["epoch", "query", "positive", "negative", "query_label", "negative_label",
                                     "strategy"])
    df.to_parquet(out / "loop.parquet", index=False)
    return len(df)


def ours(labels: np.ndarray, ids: np.ndarray, out: Path, seed: int, scheduler: str) -> int:
    ctx = SamplingContext(classes=ClassMembers.from_labels(labels), epoch=1, seed=seed)
    table = sample_triplets(ctx, get_strategy("uniform"), ids,
                            ListSettings(triplets_per_query=1, n_blocks=8, dask_scheduler=scheduler))
    write_triplet_list(out / "ours", table, {"bench": True})
    return table.num_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--classes", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="10k images, 1 repeat")
    a = ap.parse_args()
    if a.quick:
        a.images, a.repeat = 10_000, 1
    rng = np.random.default_rng(0)
    labels = rng.integers(0, a.classes, a.images)
    ids = np.arange(a.images, dtype=np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        results = {}
        for name, fn in (("vectorised (dask threads)", lambda s: ours(labels, ids, out, s, "threads")),
                         ("vectorised (synchronous)", lambda s: ours(labels, ids, out, s, "synchronous")),
                         ("per-triplet Python loop", lambda s: loop_baseline(labels, ids, out, s))):
            best = float("inf")
            for r in range(a.repeat):
                t = time.perf_counter()
                n = fn(r)
                best = min(best, time.perf_counter() - t)
            results[name] = (n, best)
    base = results["per-triplet Python loop"][1]
    print(f"{a.images} images, {a.classes} classes, best of {a.repeat}, Parquet write included")
    print(f"{'sampler':28s} {'seconds':>9s} {'triplets/s':>12s} {'vs loop':>8s}")
    for name, (n, s) in results.items():
        print(f"{name:28s} {s:9.3f} {n / s:12,.0f} {base / s:7.1f}x")


if __name__ == "__main__":
    main()
