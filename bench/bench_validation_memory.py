"""Benchmark the validation retrieval metrics (precision@k, R-precision, MAP@R) in
bounded memory against the all-at-once search they replace.

Usage::

    python bench/bench_validation_memory.py            # 10k queries: 60k gallery, then 1M x 64
    python bench/bench_validation_memory.py --quick    # small sizes for a smoke run
    python bench/bench_validation_memory.py --large-queries 200   # fewer queries on the 1M gallery

Seeded synthetic data: Gaussian class blobs of ``--dim`` dimensions, ``--classes``
equal classes in the gallery (so R = gallery / classes), queries drawn the same way.
On the gallery (default 60k, Fashion-MNIST's size) it runs the old path (one
``knn_search`` of every query's R neighbours, then ``retrieval_metrics``) and the
new one (:func:`pipeline.evaluation.bounded.bounded_retrieval`), checks they give
the same values to the last digit, and prints wall seconds and the peak RSS above
what the process held before the call (the data itself is not counted). On the
large gallery (default 1M, R = 100k) only the new path runs: the old one would
need queries x R x 12 bytes for its answer alone. Peak memory there depends on the
block, not on the number of queries, so ``--large-queries`` may be lowered to keep
the run short; seconds then scale with the queries.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import common  # noqa: F401  (puts the repo on sys.path)
import numpy as np
import psutil
from bench_knn import PeakRss

from pipeline.evaluation import bounded
from pipeline.evaluation.metrics import required_neighbors, retrieval_metrics
from pipeline.knn import knn_search

KS = (1, 10, 30)


def blobs(rng: np.random.Generator, n: int, classes: int, dim: int, centres: np.ndarray,
          balanced: bool) -> tuple[np.ndarray, np.ndarray]:
    """``n`` float32 vectors around their class centres, and their labels (equal classes when ``balanced``)."""
    labels = np.arange(n) % classes if balanced else rng.integers(0, classes, n)
    vectors = centres[labels] + rng.standard_normal((n, dim), dtype=np.float32)
    return vectors.astype(np.float32, copy=False), labels.astype(np.int64)


def all_at_once(qv: np.ndarray, ql: np.ndarray, dv: np.ndarray, dl: np.ndarray, backend: str) -> dict[str, float]:
    """The path before bounded memory: every query's R neighbours in one search, then the means."""
    need = required_neighbors(ql, dl, ks=KS)
    _, idx = knn_search(qv, dv, need, backend=backend)
    return retrieval_metrics(dl[idx], ql, dl, ks=KS)


def measure(run: Callable[[], dict[str, float]]) -> tuple[dict[str, float], float, int]:
    """``(metrics, seconds, peak extra bytes)`` of one call."""
    with PeakRss() as memory:
        start = time.perf_counter()
        metrics = run()
        seconds = time.perf_counter() - start
    return metrics, seconds, memory.peak_extra


def same(a: dict[str, float], b: dict[str, float]) -> bool:
    """Equal to the last digit (NaN equal to NaN)."""
    return a.keys() == b.keys() and all(a[n] == b[n] or (math.isnan(a[n]) and math.isnan(b[n])) for n in a)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--gallery", type=int, default=60_000, help="gallery where the old path runs too")
    parser.add_argument("--large", type=int, default=1_000_000, help="gallery for the new path only (0: skip)")
    parser.add_argument("--large-queries", type=int, default=None, help="queries on the large gallery "
                        "(default --queries)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.queries, args.gallery, args.large = 300, 6_000, 50_000
    large_queries = args.queries if args.large_queries is None else args.large_queries

    rng = np.random.default_rng(args.seed)
    # Centres close enough that classes overlap: R-precision and MAP@R land mid-range, not at 1.
    centres = 0.6 * rng.standard_normal((args.classes, args.dim), dtype=np.float32)
    print(f"dim={args.dim} classes={args.classes} backend={args.backend} cpus={psutil.cpu_count()} "
          f"block budget={bounded.BLOCK_BYTES / 2**20:.0f} MiB at {bounded.PAIR_BYTES} B a (query, neighbour) pair")
    _warm_up(centres, args.backend)
    print(f"\n{'gallery':>9}{'queries':>9}{'R':>8}{'block':>7}  {'method':<26}{'seconds':>9}{'peak extra':>14}"
          f"  values")
    status = 0
    for n, queries, old in ((args.gallery, args.queries, True), (args.large, large_queries, False)):
        if n > 0 and queries > 0:
            status |= run_gallery(rng, centres, n, queries, old=old, classes=args.classes, backend=args.backend)
    return status


def run_gallery(rng: np.random.Generator, centres: np.ndarray, n: int, queries: int, *, old: bool,
                classes: int, backend: str) -> int:
    """Print one gallery's rows (the old path first when ``old``); 1 if their values differ, else 0."""
    dv, dl = blobs(rng, n, classes, centres.shape[1], centres, balanced=True)
    qv, ql = blobs(rng, queries, classes, centres.shape[1], centres, balanced=False)
    width = required_neighbors(ql, dl, ks=KS)
    rows = []
    if old:
        rows.append(("all at once (old)", measure(lambda: all_at_once(qv, ql, dv, dl, backend))))
    new = measure(lambda: bounded.bounded_retrieval(qv, ql, dv, dl, ks=KS, backend=backend, columns=max(KS)).metrics)
    rows.append(("bounded blocks (new)", new))
    reference = rows[0][1][0]
    for name, (metrics, seconds, peak) in rows:
        values = f"map@R={metrics['map_at_r']:.6f} R-prec={metrics['r_precision']:.6f}"
        print(f"{n:>9}{queries:>9}{width:>8}{bounded.block_rows(width):>7}  {name:<26}{seconds:>9.1f}"
              f"{peak / 2**20:>10.0f} MiB  {values}")
    agree = same(new[0], reference)
    if old:
        print(f"{'':>35}same values to the last digit: {'yes' if agree else 'NO'}")
    return 0 if agree else 1


def _warm_up(centres: np.ndarray, backend: str) -> None:
    """Import libraries and start thread pools outside the timed region."""
    rng = np.random.default_rng(1)
    dv, dl = blobs(rng, 500, len(centres), centres.shape[1], centres, balanced=True)
    bounded.bounded_retrieval(dv[:50], dl[:50], dv, dl, ks=KS, backend=backend, rows=20)


if __name__ == "__main__":
    raise SystemExit(main())
