"""The raw-pixel baseline's peak memory at Tiny ImageNet's size: 100k training and 10k
validation images of 64x64x3, area-downsampled to 32x32x3 = 3,072 values (1.3 GB of
float32 vectors), 200 classes.

    .venv/bin/python bench/bench_baseline_memory.py            # 100k + 10k images, about 8 minutes
    .venv/bin/python bench/bench_baseline_memory.py --quick    # 10k + 1k

A seeded pixel store and index are generated (class templates mixed with noise), then
:func:`pipeline.evaluation.baseline.pixel_baseline` runs twice, each in a fresh process
after ``import tasks`` (what every command pays): with the baseline's own block budget
(``baseline.block_budget``: a quarter of validation's for vectors this large) and with
validation's (``bounded.BLOCK_BYTES``, what it used before). Each prints its peak
resident memory over the import, sampled every 20 ms, and its seconds; the metrics must
be identical, or the script exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import common  # noqa: F401  (puts the repo on sys.path)
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]

# One measurement, in a process of its own: argv = dataset folder, block budget in bytes (0: the baseline's).
PROBE = """
import json, sys, threading, time
import psutil
import tasks  # noqa: F401
from pipeline.evaluation import baseline
from pipeline.evaluation.settings import BaselineSettings, ValidationSettings
budget = int(sys.argv[2])
if budget:
    baseline.block_budget = lambda vector_bytes: budget
process = psutil.Process()
start_rss = process.memory_info().rss
peak = [start_rss]
done = threading.Event()
def sample():
    while not done.wait(0.02):
        peak[0] = max(peak[0], process.memory_info().rss)
threading.Thread(target=sample, daemon=True).start()
started = time.perf_counter()
metrics = baseline.pixel_baseline(sys.argv[1], sys.argv[1] + "/baseline.json", BaselineSettings(max_size=32),
                                  ValidationSettings())
seconds = time.perf_counter() - started
done.set()
print(json.dumps({"peak_mib": (peak[0] - start_rss) / 2**20, "seconds": seconds,
                  "metrics": {k: v for k, v in metrics.items() if k != "seconds"}}))
"""


def make_dataset(folder: Path, train: int, val: int, classes: int = 200) -> None:
    """A seeded Tiny ImageNet-shaped pixel store and index in ``folder``."""
    from pipeline import paths
    from pipeline.data.pixel_store import create_store

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.arange(train) % classes, np.arange(val) % classes])
    store = create_store(folder / paths.PIXEL_STORE_FILE, len(labels), 64, 3)
    templates = rng.integers(0, 256, (classes, 64, 64, 3), dtype=np.uint8)
    for lo in range(0, len(labels), 5000):
        hi = min(len(labels), lo + 5000)
        noise = rng.integers(0, 256, (hi - lo, 64, 64, 3), dtype=np.uint8)
        mix = rng.uniform(0.1, 0.4, (hi - lo, 1, 1, 1))
        store[lo:hi] = (templates[labels[lo:hi]] * mix + noise * (1 - mix)).astype(np.uint8)
    store.flush()
    del store
    pd.DataFrame({"image_id": np.arange(len(labels)), "split": ["train"] * train + ["val"] * val,
                  "label": labels}).to_parquet(folder / paths.DATASET_INDEX_FILE)


def measure(folder: Path, budget: int) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, str(folder), str(budget)], cwd=REPO, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10k training and 1k validation images")
    parser.add_argument("--keep", type=Path, help="generate the dataset here and keep it (reused when present)")
    args = parser.parse_args()
    from pipeline.evaluation import baseline, bounded

    train, val = (10_000, 1_000) if args.quick else (100_000, 10_000)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "dataset"
        if not (folder / "index.parquet").is_file():
            make_dataset(folder, train, val)
        print(f"raw-pixel baseline, {train} training + {val} validation images of 64x64x3 at 32x32x3")
        vector_bytes = (train + val) * 3 * 32 * 32 * 4
        rows = [("ours: the baseline's block budget", baseline.block_budget(vector_bytes) or bounded.BLOCK_BYTES,
                 measure(folder, 0)),
                ("validation's block budget (before)", bounded.BLOCK_BYTES, measure(folder, bounded.BLOCK_BYTES))]
    print(f"{'':38} {'budget MiB':>10} {'peak MiB over import':>21} {'seconds':>8}")
    for name, budget, result in rows:
        print(f"{name:38} {budget / 2**20:10.0f} {result['peak_mib']:21.0f} {result['seconds']:8.1f}")
    if rows[0][2]["metrics"] != rows[1][2]["metrics"]:
        print(f"FAIL: the metrics differ: {rows[0][2]['metrics']} vs {rows[1][2]['metrics']}")
        return 1
    print("metrics identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
