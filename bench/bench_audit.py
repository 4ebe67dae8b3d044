"""The label audit: its time and memory at the full Fashion-MNIST's scale, and its
detection of flipped labels against cleanlab's on the same embeddings.

    .venv/bin/python bench/bench_audit.py                       # scale: 60k x 64, 5 epochs + 10k val
    .venv/bin/python bench/bench_audit.py --quick               # 6k training images
    .venv/bin/python bench/bench_audit.py --dask local:2        # the votes on a 2-worker dask cluster
    .venv/bin/python bench/bench_audit.py --experiment noisy20 --epoch 14   # detection vs cleanlab

The detection part reads a finished experiment trained with ``[run] label_noise``
(e.g. ``luigi --module tasks RunAll --experiment noisy20 --run-label-noise 0.2``):
our suspects (AuditEpoch's rule, pooling ``--pool`` epochs back to epoch 1) and cleanlab's
``Datalab.find_issues(features=...)`` label issues on the epoch's training
embeddings, each scored against the flips: precision, recall, F1 and AUROC.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import common  # noqa: F401  (puts the repo on sys.path)
import numpy as np

from pipeline import paths
from pipeline.audit.findings import audit_tables, auroc, detection_scores, exact_duplicates
from pipeline.audit.settings import AuditSettings, pooled_epochs
from pipeline.data.label_noise import LabelNoise, flip_labels
from pipeline.embedding.embed import load_embeddings


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scale(n_train: int, n_val: int, dim: int = 64, classes: int = 10, address: str = "", pool: int = 5) -> None:
    """Time the audit of ``pool`` synthetic epochs, then again with faiss's own BLAS tiles
    (the baseline: what the audit took before :data:`~pipeline.knn.faiss_backend.BLAS_TILES`)."""
    seconds = scale_once(n_train, n_val, dim, classes, address, pool)
    from unittest import mock

    from pipeline.knn import faiss_backend

    with mock.patch.object(faiss_backend, "BLAS_TILES", (4096, 1024)):
        baseline = scale_once(n_train, n_val, dim, classes, address, pool, quiet=True)
    print(f"  with faiss's default BLAS tiles (4096 x 1024): {baseline:.1f} s; ratio {seconds / baseline:.2f}")


def scale_once(n_train: int, n_val: int, dim: int, classes: int, address: str, pool: int,
               quiet: bool = False) -> float:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (classes, dim))
    true = rng.integers(0, classes, n_train)
    given = flip_labels(true, LabelNoise(0.2), seed=0)
    epochs = [(centres[true] + rng.normal(0, 1, (n_train, dim))).astype(np.float32) for _ in range(pool)]
    val_labels = rng.integers(0, classes, n_val)
    val = (centres[val_labels] + rng.normal(0, 1, (n_val, dim))).astype(np.float32)
    pixels = rng.integers(0, 255, (n_train + n_val, 28, 28, 1), dtype=np.uint8)
    ids = np.arange(n_train + n_val)
    splits = np.where(ids < n_train, "train", "val").astype(object)
    from pipeline.dask_cluster import dask_client

    before = peak_rss_mib()
    with dask_client(address) as client:
        started = time.perf_counter()
        exact = exact_duplicates(pixels, ids, splits)
        _, _, summary = audit_tables(epochs, ids[:n_train], given, AuditSettings(epochs=pool), val_vectors=val,
                                     val_ids=ids[n_train:], duplicates=exact, true_labels=true, client=client)
        seconds = time.perf_counter() - started
    if quiet:
        return seconds
    where = f"votes on the dask cluster {address}" if address else "in process"
    print(f"audit of {n_train} training x {dim} ({pool} epochs pooled) + {n_val} validation images, {where}: "
          f"{seconds:.1f} s, peak RSS of this process {peak_rss_mib():.0f} MiB "
          f"({peak_rss_mib() - before:.0f} MiB over the inputs)")
    print(f"  synthetic 20% symmetric flips: detection {summary['detection']}")
    return seconds


def compare_detectors(root: Path, experiment: str, epoch: int, pool: int) -> dict[str, dict[str, float]]:
    """Our audit's and cleanlab Datalab's detection of ``experiment``'s flipped labels on
    ``epoch``'s training embeddings: ``{"ours": ..., "cleanlab": ...}``, each with suspects,
    precision, recall, f1, auroc and seconds, plus ``flipped`` and ``images`` counts."""
    import json

    from cleanlab import Datalab

    config = json.loads(paths.config_file(root, experiment).read_text())
    run = config.get("run", {})
    noise = LabelNoise(float(run.get("label_noise", 0.0)), run.get("label_noise_kind", "symmetric"))
    if not noise.active:
        raise SystemExit(f"experiment {experiment!r} flipped no labels: train one with --run-label-noise 0.2")
    dirs = [paths.embeddings_dir(root, experiment, e) for e in pooled_epochs(epoch, pool)]
    train = [load_embeddings(d, "train") for d in dirs]
    truth = train[0].labels
    given = flip_labels(truth, noise, int(run.get("seed", 0)))
    flipped = given != truth
    started = time.perf_counter()
    images, _, ours = audit_tables([t.vectors for t in train], train[0].image_ids, given, AuditSettings(epochs=pool),
                                   true_labels=truth)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    lab = Datalab(data={"label": given}, label_name="label")
    lab.find_issues(features=train[0].vectors, issue_types={"label": {}})
    issues = lab.get_issues("label")
    theirs_s = time.perf_counter() - started
    theirs = detection_scores(issues["is_label_issue"].to_numpy(), issues["label_score"].to_numpy(), flipped)
    theirs["auroc"] = auroc(1 - issues["label_score"].to_numpy(), flipped)
    return {"ours": {**ours["detection"], "suspects": int(images["suspect"].sum()), "seconds": ours_s},
            "cleanlab": {**theirs, "suspects": int(issues["is_label_issue"].sum()), "seconds": theirs_s},
            "flipped": int(flipped.sum()), "images": len(flipped), "noise": f"{noise.kind} {noise.share:g}"}


def detection_table(rows: dict[str, dict]) -> list[str]:
    """Markdown rows for :func:`compare_detectors` results, one pair per experiment."""
    lines = ["| experiment | detector | suspects | precision | recall | F1 | AUROC | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        for who in ("ours", "cleanlab"):
            d = r[who]
            lines.append(f"| {name} | {'AuditEpoch' if who == 'ours' else 'cleanlab Datalab'} | {d['suspects']} | "
                         f"{d['precision']:.3f} | {d['recall']:.3f} | {d['f1']:.3f} | {d['auroc']:.3f} | "
                         f"{d['seconds']:.1f} |")
    return lines


def detection(root: Path, experiment: str, epoch: int, pool: int) -> None:
    r = compare_detectors(root, experiment, epoch, pool)
    print(f"{experiment} epoch {epoch}: {r['flipped']} of {r['images']} training labels flipped ({r['noise']}); "
          f"ours pools epochs {pooled_epochs(epoch, pool)}, cleanlab reads epoch {epoch}")
    print("\n".join(detection_table({experiment: r})))
    print(f"F1 ratio ours / cleanlab: {r['ours']['f1'] / max(r['cleanlab']['f1'], 1e-9):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6k training images instead of 60k")
    parser.add_argument("--experiment", help="score detection on this noisy experiment instead")
    parser.add_argument("--epoch", type=int, default=14)
    parser.add_argument("--pool", type=int, default=AuditSettings.epochs, help="epochs pooled by the audit")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--dask", default="", metavar="ADDRESS", help="run the votes on this [dask] address")
    args = parser.parse_args()
    if args.experiment:
        detection(args.artifacts, args.experiment, args.epoch, args.pool)
    else:
        scale(6_000 if args.quick else 60_000, 1_000 if args.quick else 10_000, address=args.dask, pool=args.pool)


if __name__ == "__main__":
    main()
