"""Similar-image search latency and throughput (``Searcher``, what ``python -m
pipeline.search`` and the search page run) at a 100k-image gallery, against
plain baselines measured in the same run.

    .venv/bin/python bench/bench_search.py [--gallery 100000 --dim 64 --k 10 --queries 200 --batch 256]
                                           [--threads N] [--quick]

Builds a real artifacts folder in a temporary directory: a 28-pixel dataset, a
checkpoint of the shipped network (ResNet-18, width 16, small-s2 stem,
``--dim`` floats), synthetic gallery vectors written as an epoch's embeddings, and
the search index built from them by ``build_search_index``. Queries are PNG
files. Prints, per stage (decode the file, embed it, search the gallery):

* single-query latency p50 / p99 over ``--queries`` one-image calls;
* batch throughput (queries/s) for ``--batch`` queries per call;
* the same for the baselines: a bare ``net(x)`` on a ready tensor (embedding) and
  numpy brute force over the gallery (search), with our time / baseline time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import common  # noqa: F401  (puts the repo on sys.path)
import faiss
import numpy as np
import pandas as pd
import torch
from common import best_of
from PIL import Image

from pipeline import paths
from pipeline.checkpoint import save_checkpoint
from pipeline.data.pixel_store import create_store
from pipeline.embedding.embed import write_shards
from pipeline.network import ModelSettings, build_model
from pipeline.search.index import build_search_index
from pipeline.search.searcher import Searcher
from pipeline.search.settings import SearchIndexSettings

SIZE = 28
EXPERIMENT = "bench"


def make_artifacts(root: Path, gallery: int, n_queries: int, dim: int, width: int) -> list[Path]:
    """A searchable epoch 1 of experiment ``bench`` under ``root``; returns the query PNG files."""
    rng = np.random.default_rng(0)
    n = gallery + n_queries
    dataset = paths.dataset_dir(root, f"bench-{SIZE}px")
    dataset.mkdir(parents=True)
    labels = rng.integers(0, 10, n)
    index = pd.DataFrame({"image_id": np.arange(n, dtype=np.int64), "split": ["train"] * gallery + ["val"] * n_queries,
                          "label": labels, "class_id": labels.astype(str), "class_name": [f"class {c}" for c in labels],
                          "path": pd.Series([None] * n, dtype="string")})
    index.to_parquet(dataset / paths.DATASET_INDEX_FILE, index=False)
    store = create_store(dataset / paths.PIXEL_STORE_FILE, n, SIZE)
    queries = rng.integers(0, 256, (n_queries, SIZE, SIZE, 3), dtype=np.uint8)
    store[gallery:] = queries
    store.flush()
    files = []
    for i, pixels in enumerate(queries):
        files.append(root / "queries" / f"q{i}.png")
        files[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(pixels).save(files[-1])

    torch.manual_seed(0)
    settings = ModelSettings(width=width, embedding_dim=dim, stem="small-s2")
    save_checkpoint(paths.train_dir(root, EXPERIMENT, 1) / paths.CHECKPOINT_FILE,
                    {"model": build_model(settings).state_dict(), "model_settings": asdict(settings), "epoch": 1,
                     "config": {"dataset": {"source": "embedded", "name": "bench"}}})
    emb = paths.embeddings_dir(root, EXPERIMENT, 1)
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    write_shards(emb, index[["image_id", "split", "label"]], vectors, epoch=1)
    build_search_index(emb, dataset, paths.search_dir(root, EXPERIMENT, 1), SearchIndexSettings(), epoch=1,
                       experiment=EXPERIMENT, dataset_root=None)
    return files


def numpy_search(gallery: np.ndarray, norms: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Brute-force k nearest rows by squared distance ``|g|^2 - 2 g.q`` (|q|^2 is constant per query)."""
    scores = norms[None, :] - 2.0 * (queries @ gallery.T)
    top = np.argpartition(scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)
    return np.take_along_axis(top, order, axis=1)


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def percentiles(seconds: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    ms = np.asarray(seconds) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gallery", type=int, default=100_000, help="indexed vectors")
    ap.add_argument("--dim", type=int, default=64, help="embedding length (the shipped config: 64)")
    ap.add_argument("--width", type=int, default=16, help="network width (the shipped config: 16)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--queries", type=int, default=200, help="single-image calls timed")
    ap.add_argument("--batch", type=int, default=256, help="queries per batch call")
    ap.add_argument("--repeat", type=int, default=5, help="batch calls timed (the best counts)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch and faiss threads (0 = their defaults); 1 gives steadier figures on a busy machine")
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
        faiss.omp_set_num_threads(a.threads)
    if a.quick:
        a.gallery, a.queries, a.batch, a.repeat = 10_000, 30, 64, 2
    n_queries = max(a.queries, a.batch)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = make_artifacts(root, a.gallery, n_queries, a.dim, a.width)
        searcher, load_s = timed(Searcher.from_artifacts, root, EXPERIMENT, 1)
        gallery = searcher.index.reconstruct_n(0, searcher.count)
        norms = np.einsum("ij,ij->i", gallery, gallery)
        net = searcher.net

        @torch.no_grad()
        def bare_embed(x: torch.Tensor) -> np.ndarray:
            return net(x).numpy()

        def tensor(pixels: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(255).contiguous(
                memory_format=torch.channels_last)

        # Inputs of each stage, prepared once, so every stage is timed on its own.
        pixels = searcher.decode(files)
        vectors = searcher.embed_pixels(pixels)
        tensors = [tensor(pixels[i : i + 1]) for i in range(a.queries)]

        def pipeline(i: int) -> object:
            return searcher.search_files([files[i]], a.k)

        stages = {
            "decode": lambda i: searcher.decode([files[i]]),
            "embed": lambda i: searcher.embed_pixels(pixels[i : i + 1]),
            "search": lambda i: searcher.search_vectors(vectors[i : i + 1], a.k),
            "total (search_files)": pipeline,
            "bare net(x)": lambda i: bare_embed(tensors[i]),
            "numpy search": lambda i: numpy_search(gallery, norms, vectors[i : i + 1], a.k),
            "faiss index.search": lambda i: searcher.index.search(vectors[i : i + 1], a.k),
        }
        batch = slice(0, a.batch)
        batch_x = tensor(pixels[batch])
        batch_stages = {
            "decode": lambda: searcher.decode(files[batch]),
            "embed": lambda: searcher.embed_pixels(pixels[batch]),
            "search": lambda: searcher.search_vectors(vectors[batch], a.k),
            "total (search_files)": lambda: searcher.search_files(files[batch], a.k),
            "bare net(x)": lambda: bare_embed(batch_x),
            "numpy search": lambda: numpy_search(gallery, norms, vectors[batch], a.k),
            "faiss index.search": lambda: searcher.index.search(vectors[batch], a.k),
        }
        # Stage by stage, in two rounds of opposite order, so each stage runs with its
        # thread pools as warm as the others' and background load hits all alike.
        single: dict[str, list[float]] = {name: [] for name in stages}
        for order in (list(stages), list(reversed(stages))):
            for name in order:
                stages[name](0)  # warm-up
                single[name] += [timed(stages[name], i)[1] for i in range(a.queries)]
        best = {name: best_of(fn, a.repeat) for name, fn in batch_stages.items()}
        hits = searcher.search_vectors(vectors[batch], a.k)
        reference = numpy_search(gallery, norms, vectors[batch], a.k)
        same = np.mean([[h.image_id for h in row] == list(ref) for row, ref in zip(hits, reference)])

    print(f"gallery {a.gallery:,} vectors x {a.dim} floats, k {a.k}; network resnet18 width {a.width} small-s2 on "
          f"{SIZE}x{SIZE} PNG queries; torch threads {torch.get_num_threads()}, faiss threads "
          f"{faiss.omp_get_max_threads()}; Searcher.from_artifacts {load_s:.2f} s")
    print(f"\n{'stage':<22}{'1 query p50 ms':>15}{'p99 ms':>9}{'batch ' + str(a.batch) + ' queries/s':>22}")
    for stage, seconds in single.items():
        p50, p99 = percentiles(seconds)
        print(f"{stage:<22}{p50:>15.3f}{p99:>9.3f}{a.batch / best[stage]:>22,.0f}")
    print("\nratios (ours / baseline time; below 1 = faster):")
    for ours, base in (("embed", "bare net(x)"), ("search", "numpy search"), ("search", "faiss index.search")):
        p50 = percentiles(single[ours])[0] / percentiles(single[base])[0]
        print(f"  {ours:<7} vs {base:<19} single p50 {p50:6.2f}x   batch {best[ours] / best[base]:6.2f}x")
    print(f"same neighbours as numpy brute force: {same:.1%} of the batch's queries")


if __name__ == "__main__":
    main()
