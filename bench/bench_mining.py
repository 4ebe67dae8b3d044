"""Benchmark offline triplet mining at Tiny ImageNet scale.

Usage::

    python bench/bench_mining.py                       # uniform, semihard/pool, semihard/knn
    python bench/bench_mining.py --runs uniform semihard-pool mixed-knn --mixed-share 0.2
    python bench/bench_mining.py --quick               # 10k x 64, a smoke run

Generates seeded float32 "previous epoch" embeddings (``--n`` vectors of ``--dim``
dims in ``--classes`` classes: unit-norm class centres plus isotropic noise, so
classes overlap a little), then samples one epoch through
:func:`pipeline.sampling.driver.sample_triplets` with dask's threaded scheduler
for each requested run. Prints wall-clock seconds, triplets/s, the ratio to the
uniform strategy in the same process, the peak RSS above the level just before
the run (psutil, sampled every 5 ms by a background thread) and the mined list's
strategy mix / active share.
"""

from __future__ import annotations

import argparse
import gc
import sys
import threading
import time
from pathlib import Path

import dask
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.sampling import ClassMembers, ListSettings, SamplingContext, get_strategy, sample_triplets  # noqa: E402
from pipeline.sampling.mining_summary import summarize_triplets  # noqa: E402

RUNS = {
    "uniform": ("uniform", {}),
    "semihard-pool": ("semihard", {"candidates": "pool"}),
    "semihard-knn": ("semihard", {"candidates": "knn"}),
    "hard-pool": ("hard", {"candidates": "pool"}),
    "hard-knn": ("hard", {"candidates": "knn"}),
    "mixed-pool": ("mixed", {"candidates": "pool", "mined_strategy": "semihard"}),
    "mixed-knn": ("mixed", {"candidates": "knn", "mined_strategy": "semihard"}),
    "semihard-pool-relevance": ("semihard", {"candidates": "pool", "positive": "relevance"}),
    "semihard-pool-farthest": ("semihard", {"candidates": "pool", "positive": "farthest"}),
}


class PeakRss:
    """Peak RSS above the starting level while the ``with`` block runs (sampled)."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.process = psutil.Process()

    def __enter__(self) -> "PeakRss":
        gc.collect()
        self.start = self.process.memory_info().rss
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval_s)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def extra_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def make_embeddings(n: int, dim: int, n_classes: int, seed: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % n_classes)
    centres = rng.standard_normal((n_classes, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    emb = rng.standard_normal((n, dim), dtype=np.float32)
    emb *= noise / np.sqrt(dim)
    emb += centres[labels]
    return labels, emb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--classes", type=int, default=200)
    ap.add_argument("--noise", type=float, default=3.0, help="noise norm relative to the unit class centres")
    ap.add_argument("--margin", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-blocks", type=int, default=8)
    ap.add_argument("--workers", type=int, default=None, help="dask threads (default: cores)")
    ap.add_argument("--pool-size", type=int, default=None)
    ap.add_argument("--knn-k", type=int, default=None)
    ap.add_argument("--mixed-share", type=float, default=None)
    ap.add_argument("--runs", nargs="+", default=["uniform", "semihard-pool", "semihard-knn"], choices=sorted(RUNS))
    ap.add_argument("--quick", action="store_true", help="10k x 64 in 20 classes")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.dim, args.classes = 10_000, 64, 20
    if "uniform" not in args.runs:
        args.runs = ["uniform", *args.runs]

    t0 = time.perf_counter()
    labels, emb = make_embeddings(args.n, args.dim, args.classes, args.seed, args.noise)
    ids = np.arange(args.n, dtype=np.int64)
    ctx = SamplingContext(ClassMembers.from_labels(labels), epoch=1, seed=args.seed, margin=args.margin, embeddings=emb)
    print(
        f"data: {args.n} x {args.dim} float32 ({emb.nbytes / 2**20:.0f} MiB), {args.classes} classes, "
        f"margin {args.margin}, {args.n_blocks} blocks, dask threads={args.workers or psutil.cpu_count()} "
        f"(generated in {time.perf_counter() - t0:.1f} s)"
    )
    extra = {k: v for k, v in (("pool_size", args.pool_size), ("knn_k", args.knn_k),
                                ("mined_share", args.mixed_share)) if v is not None}
    print(f"{'run':26s} {'seconds':>8s} {'triplets/s':>11s} {'x uniform':>9s} {'peak MiB':>9s}  mix / active share")
    # Warm-up (imports, dask thread pool) on a slice, so the first timed run is not penalised.
    warm = 2000
    wctx = SamplingContext(ClassMembers.from_labels(labels[:warm]), epoch=0, seed=0, margin=args.margin,
                           embeddings=emb[:warm])
    for run in args.runs:
        name, opts = RUNS[run]
        sample_triplets(wctx, get_strategy(name, **opts), ids[:warm],
                        ListSettings(triplets_per_query=1, n_blocks=2, dask_scheduler="threads"))
    base = None
    for run in args.runs:
        name, opts = RUNS[run]
        if name != "uniform":
            opts = {**opts, **extra}
        strategy = get_strategy(name, **opts)
        with PeakRss() as mem:
            t = time.perf_counter()
            with dask.config.set(num_workers=args.workers):
                table = sample_triplets(ctx, strategy, ids, ListSettings(triplets_per_query=1, n_blocks=args.n_blocks,
                                                                         dask_scheduler="threads"))
            secs = time.perf_counter() - t
        base = base if base is not None else secs
        summary = summarize_triplets(table.select(["strategy", "d_qp", "d_qn"]).to_pandas(), args.margin)
        mix = ", ".join(f"{k} {v:.2f}" for k, v in summary["strategy_share"].items())
        active = summary["active_share"]
        print(
            f"{run:26s} {secs:8.2f} {table.num_rows / secs:11.0f} {secs / base:9.1f} {mem.extra_mb:9.0f}  "
            f"{mix}" + ("" if np.isnan(active) else f" / active {active:.2f}"),
            flush=True,
        )
        del table
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
