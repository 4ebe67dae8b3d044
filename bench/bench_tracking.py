"""What TensorBoard tracking costs: the import, and the event writing per training step
against the step itself.

    .venv/bin/python bench/bench_tracking.py                       # against a CPU step of the demo (0.07 s)
    .venv/bin/python bench/bench_tracking.py --root artifacts --experiment demo   # against that run's steps
    .venv/bin/python bench/bench_tracking.py --quick

Prints the seconds to import what the writer needs (in a fresh interpreter, against
importing torch, which every training process pays anyway), the microseconds to log one
step's seven scalars (median of ``--steps`` steps, flushed every 10 s as in a run), and
that cost as a share of a training step: the median ``seconds`` of the run's step log, or
0.07 s, the median step of a default run on the reference machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

import common  # noqa: F401  (puts the repo on sys.path)
import numpy as np
import pandas as pd

from pipeline import paths
from pipeline.tracking import EventLog, step_scalars

DEMO_STEP_SECONDS = 0.07


def import_seconds(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="an artifacts root whose step logs give the step time")
    parser.add_argument("--experiment", default="demo")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="2,000 steps")
    args = parser.parse_args()
    steps = 2_000 if args.quick else args.steps

    torch_s = import_seconds("torch")
    writer_s = import_seconds("tensorboard.compat.proto.event_pb2, tensorboard.summary.writer.record_writer")
    row = {"epoch": 1, "step": 0, "loss": 0.98, "active_fraction": 0.61, "lr": 0.01, "seconds": 0.35,
           "mean_distance": 1.2, "collapsed": False, "images": 133, "triplets": 2128, "loss_all": 0.52}
    times = np.empty(steps)
    with tempfile.TemporaryDirectory() as folder, EventLog(folder, "train", 1) as events:
        for i in range(steps):
            started = time.perf_counter()
            events.scalars(i, step_scalars({**row, "step": i, "loss": 1.0 / (i + 1)}), "train/")
            times[i] = time.perf_counter() - started
        size = events.path.stat().st_size
    step_s, source = DEMO_STEP_SECONDS, "the demo's CPU step"
    if args.root:
        log = pd.read_parquet(paths.experiment_dir(args.root, args.experiment) / "train")
        step_s, source = float(log["seconds"].median()), f"{args.experiment}'s median step"
    per_step = float(np.median(times))
    print(f"import: torch {torch_s:.2f} s; the event writer {writer_s:.2f} s more at most "
          f"({writer_s / torch_s:.1%} of torch's, measured alone)")
    print(f"logging one step: median {per_step * 1e6:.0f} us, mean {times.mean() * 1e6:.0f} us over {steps} steps "
          f"({size / steps:.0f} bytes per step)")
    print(f"share of a training step ({source}, {step_s:.3f} s): {per_step / step_s:.4%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
