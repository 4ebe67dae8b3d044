"""Validation's retrieval metrics against pytorch-metric-learning's on the same embeddings:
seconds, their ratio, and the values side by side.

    .venv/bin/python bench/bench_validation.py --root artifacts --experiment fashion-mnist-full --epoch 5
    .venv/bin/python bench/bench_validation.py                  # synthetic: 10k queries x 60k gallery x 64
    .venv/bin/python bench/bench_validation.py --quick          # 2k x 12k

One run times, on the epoch's saved embeddings (validation queries against the
training gallery):

* ``ours``: :func:`pipeline.evaluation.bounded.gallery_retrieval`, the metrics
  ValidateEpoch computes (precision@1/10/30, R-precision and MAP@R over each query's
  R nearest), exact only where a near tie can move a label; where R is at least a 64th
  of the gallery (and 256), the candidates come from the float64 backend, which leaves
  only true ties to recompute;
* ``ours, faiss candidates``: the same from faiss's float32 candidates, as before the
  float64 backend (the baseline of that change);
* ``ours, canonical rows``: the same with every row canonical, as before the label-aware
  search;
* ``pml``: ``AccuracyCalculator(k="max_bin_count")`` with precision@1, R-precision and
  MAP@R (it searches with faiss when installed, as here);
* ``ValidateEpoch's work``: :func:`pipeline.evaluation.evaluate.evaluate_epoch`, which
  adds the 1k training queries, triplet precision, the figure neighbours and the
  per-class, per-query and confusion tables.

The values must agree: ours to the last digit between the two searches, and within
``--tolerance`` of pytorch-metric-learning's (which breaks exact distance ties in its
own way), or the script exits non-zero.
"""

from __future__ import annotations

import argparse
import sys
import time
from unittest import mock

import common  # noqa: F401  (puts the repo on sys.path)
import numpy as np

from pipeline import paths
from pipeline.embedding.embed import Embeddings, load_embeddings
from pipeline.evaluation import bounded
from pipeline.evaluation.evaluate import evaluate_epoch
from pipeline.evaluation.gallery import Gallery
from pipeline.evaluation.settings import ValidationSettings

SHARED = {"precision_at_1": "precision_at_1", "r_precision": "r_precision", "map_at_r": "mean_average_precision_at_r"}


def synthetic(queries: int, gallery: int, dim: int = 64, classes: int = 10) -> tuple[Embeddings, Embeddings]:
    """Seeded Gaussian class blobs that overlap, like an embedding part way through training."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 0.25, (classes, dim))

    def draw(n: int, offset: int) -> Embeddings:
        labels = np.arange(n) % classes
        vectors = (centres[labels] + rng.normal(0, 1, (n, dim))).astype(np.float32)
        return Embeddings(np.arange(offset, offset + n), labels.astype(np.int64), vectors)

    return draw(gallery, 0), draw(queries, gallery)


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


ORIGINAL_SEARCH = bounded.search_gallery


def canonical_rows(gallery, queries, k, **kwargs):
    """search_gallery as before the label-aware search: every row canonical."""
    kwargs.pop("exact_columns", None)
    return ORIGINAL_SEARCH(gallery, queries, k, **kwargs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="artifacts root holding the experiment")
    parser.add_argument("--experiment", default="fashion-mnist-full")
    parser.add_argument("--epoch", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="synthetic 2k queries x 12k gallery")
    parser.add_argument("--tolerance", type=float, default=2e-3,
                        help="largest difference allowed from pytorch-metric-learning's values")
    parser.add_argument("--skip-canonical", action="store_true", help="leave out the canonical-rows baseline")
    parser.add_argument("--skip-faiss", action="store_true", help="leave out the faiss-candidates baseline")
    args = parser.parse_args()

    if args.root:
        folder = paths.embeddings_dir(args.root, args.experiment, args.epoch)
        train, val = load_embeddings(folder, "train"), load_embeddings(folder, "val")
        what = f"{args.experiment} epoch {args.epoch}"
    else:
        train, val = synthetic(2_000, 12_000) if args.quick else synthetic(10_000, 60_000)
        what = "synthetic Gaussian blobs"
    print(f"{what}: {len(val.labels)} queries x {len(train.labels)} gallery x {train.vectors.shape[1]}")
    gallery = Gallery(train.vectors, train.labels)
    rows: list[tuple[str, float, dict]] = []

    import torch  # noqa: F401  (imported by ValidateEpoch anyway: no row should pay for it)

    ours, seconds = timed(lambda: bounded.gallery_retrieval(val.vectors, val.labels, gallery).metrics)
    rows.append(("ours", seconds, ours))
    if not args.skip_faiss:
        on_faiss = Gallery(train.vectors, train.labels, "faiss")
        before, seconds = timed(lambda: bounded.gallery_retrieval(val.vectors, val.labels, on_faiss).metrics)
        rows.append(("ours, faiss candidates", seconds, before))
        if before != ours:
            print(f"FAIL: the float64 candidates moved a metric: {before} vs {ours}")
            return 1
    if not args.skip_canonical:
        with mock.patch.object(bounded, "search_gallery", canonical_rows):
            before, seconds = timed(lambda: bounded.gallery_retrieval(val.vectors, val.labels, gallery).metrics)
        rows.append(("ours, canonical rows", seconds, before))
        if before != ours:
            print(f"FAIL: the label-aware search moved a metric: {before} vs {ours}")
            return 1

    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calculator = AccuracyCalculator(include=tuple(SHARED.values()), k="max_bin_count", device=torch.device("cpu"))
    theirs, seconds = timed(lambda: calculator.get_accuracy(val.vectors, val.labels, train.vectors, train.labels,
                                                            ref_includes_query=False))
    rows.append(("pml", seconds, {ours_key: theirs[key] for ours_key, key in SHARED.items()}))

    settings = ValidationSettings()
    _, seconds = timed(lambda: evaluate_epoch(train, val, settings))
    rows.append(("ValidateEpoch's work (evaluate_epoch)", seconds, {}))

    pml_seconds = rows[-2][1]
    print(f"{'':40} {'seconds':>8} {'x pml':>6}  " + "  ".join(f"{k:>14}" for k in SHARED))
    for name, seconds, values in rows:
        cells = "  ".join(f"{values[k]:14.6f}" if k in values else f"{'':14}" for k in SHARED)
        print(f"{name:40} {seconds:8.2f} {seconds / pml_seconds:6.2f}  {cells}")
    worst = max(abs(ours[k] - rows[-2][2][k]) for k in SHARED)
    print(f"largest difference from pytorch-metric-learning: {worst:.2e} (tolerance {args.tolerance:g})")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
