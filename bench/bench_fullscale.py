"""The full Fashion-MNIST run, stage by stage: seconds and peak memory of every stage of
``RunAll``, from an empty artifacts root, and the precision@30 each epoch reaches.

    apt-get install dataset-fashion-mnist
    .venv/bin/python bench/bench_fullscale.py                          # configs/fashion-mnist.cfg
    .venv/bin/python bench/bench_fullscale.py --keep /tmp/full         # keep (and resume) the root
    .venv/bin/python bench/bench_fullscale.py --config my.cfg --experiment my-exp

Each stage is the real ``luigi --module tasks <Task>`` command in a subprocess, with the
repository's luigi.cfg under ``--config`` and ``[artifacts] root`` pointed at the work
folder, in the order ``RunAll`` needs them: indexing, the raw-pixel baseline, epoch 0's
network, embeddings and validation, then per epoch the triplet list, training, embedding
and validation, then the last epoch's label audit and the report. Peak memory is the
largest resident sum over the command's process tree, sampled every 0.1 s. Every command
also pays Python's and the task module's start-up, printed once (``import tasks``) so it
can be set apart: a single ``RunAll`` pays it once.

The table groups the stages (training, embedding, validation, lists, audit, baseline,
indexing, report), so the stage that dominates is the first line to read.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from configparser import ConfigParser
from pathlib import Path

import common  # noqa: F401  (puts the repo on sys.path)
from bench_scale import run_stage

REPO = Path(__file__).resolve().parents[1]


def stages(experiment: str, epochs: int) -> list[tuple[str, str, list[str]]]:
    """``(group, task, arguments)`` in the order RunAll's graph needs them."""
    exp = ["--experiment", experiment]
    out = [("indexing", "IndexDataset", []), ("baseline", "PixelBaseline", []),
           ("training", "TrainEpoch", ["--epoch", "0", *exp]), ("embedding", "EmbedEpoch", ["--epoch", "0", *exp]),
           ("validation", "ValidateEpoch", ["--epoch", "0", *exp])]
    for e in range(1, epochs + 1):
        n = ["--epoch", str(e), *exp]
        out += [("lists", "TripletList", n), ("training", "TrainEpoch", n), ("embedding", "EmbedEpoch", n),
                ("validation", "ValidateEpoch", n)]
    return out + [("audit", "AuditEpoch", ["--epoch", str(epochs), *exp]),
                  ("report", "Report", ["--epochs", str(epochs), *exp])]


def start_up_seconds() -> float:
    started = time.perf_counter()
    subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-c", "import tasks"], cwd=REPO, check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "fashion-mnist.cfg")
    parser.add_argument("--keep", type=Path, help="artifacts root to use and keep (default: a temporary one)")
    a = parser.parse_args()
    cfg = ConfigParser()
    cfg.read([REPO / "luigi.cfg", a.config])
    experiment, epochs = cfg.get("run", "experiment"), cfg.getint("run", "epochs")
    with tempfile.TemporaryDirectory(prefix="bench-fullscale-") as tmp:
        root = (a.keep or Path(tmp) / "artifacts").resolve()
        root.mkdir(parents=True, exist_ok=True)
        config = root.parent / f"{root.name}.cfg"
        config.write_text(a.config.read_text() + f"\n\n[artifacts]\nroot = {root}\n")
        log_file = root.parent / f"{root.name}.log"
        print(f"{a.config} -> {root} ({experiment}, {epochs} epochs); log {log_file}", flush=True)
        rows = []
        for group, task, args in stages(experiment, epochs):
            seconds, peak = run_stage(task, args, ["--local-scheduler"], config, log_file)
            rows.append((group, f"{task} {' '.join(args)}".strip(), seconds, peak))
            print(f"  {rows[-1][1]:60} {seconds:7.1f} s {peak / 2**20:7.0f} MiB", flush=True)
        start = start_up_seconds()
        metrics = [json.loads((root / experiment / "metrics" / f"epoch-{e:03d}.json").read_text())
                   for e in range(epochs + 1)]
    total = sum(r[2] for r in rows)
    print(f"\n{'stage':12} {'seconds':>8} {'share':>6} {'peak MiB':>9}   (each command also pays "
          f"{start:.1f} s of start-up: {start * len(rows):.0f} s of the {total:.0f})")
    for group in sorted({r[0] for r in rows}, key=lambda g: -sum(r[2] for r in rows if r[0] == g)):
        mine = [r for r in rows if r[0] == group]
        seconds = sum(r[2] for r in mine)
        print(f"{group:12} {seconds:8.1f} {seconds / total:6.1%} {max(r[3] for r in mine) / 2**20:9.0f}")
    bare = (total - start * len(rows)) / 60
    print(f"{'total':12} {total:8.1f}   ({total / 60:.1f} min; less start-up {bare:.1f} min)")
    print("precision@30 by epoch: " + ", ".join(f"{m['precision_at_30_val']:.3f}" for m in metrics))


if __name__ == "__main__":
    main()
