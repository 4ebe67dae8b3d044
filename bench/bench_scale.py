"""The data-parallel stages on a Tiny ImageNet-shaped tree, in this process and on a
dask LocalCluster: seconds and peak RSS per stage, for each.

    .venv/bin/python bench/bench_scale.py                 # 200 classes x (500 train + 50 val), 64 px JPEGs
    .venv/bin/python bench/bench_scale.py --quick         # 20 classes x (50 + 5)
    .venv/bin/python bench/bench_scale.py --address local:4 --classes 100

Each stage is the real command (``luigi --module tasks <Stage>`` with the shipped
luigi.cfg) in a subprocess, run once with ``[dask] address`` empty and once with
``--address`` (default ``local:2``), each on its own artifacts root:

    IndexDataset           decode the JPEGs into the pixel store
    TrainEpoch --epoch 0   the initial network (setup; not a dask stage)
    EmbedEpoch --epoch 0   every image through the network
    TripletList --epoch 1  the ``hard`` strategy mined from epoch 0's vectors (class blocks)
    ValidateEpoch --epoch 0
    PixelBaseline

Peak RSS is the largest sum over the command's whole process tree (the luigi
process, its forks and the cluster's workers), sampled every 0.1 s; the
LocalCluster's start-up is part of each dask stage's seconds, as a user pays it.
Outputs are compared: the embedding manifests, triplet lists and metrics must be
identical between the two modes, or the script exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts the repo on sys.path)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

STAGES = (
    ("IndexDataset", []),
    ("TrainEpoch", ["--epoch", "0", "--experiment", "bench"]),
    ("EmbedEpoch", ["--epoch", "0", "--experiment", "bench"]),
    ("TripletList", ["--epoch", "1", "--experiment", "bench", "--strategy", "hard"]),
    ("ValidateEpoch", ["--epoch", "0", "--experiment", "bench"]),
    ("PixelBaseline", []),
)


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and every descendant (0 once it has exited)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        child = int(entry.name)
        children.setdefault(int(fields[1]), []).append(child)
        rss[child] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(children.get(p, []))
    return total


def run_stage(task: str, args: list[str], common_args: list[str], config: Path,
              log_file: Path) -> tuple[float, int]:
    """Seconds and peak tree RSS of one stage's command; exits the script if it fails."""
    cmd = [str(REPO / ".venv" / "bin" / "luigi"), "--module", "tasks", task, *args, *common_args]
    # luigi reads the repository's luigi.cfg, then this file over it; PYTHONPATH makes it
    # this checkout's code, even where the environment was installed from another one.
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(config), "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(0.1)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{task} failed (exit {proc.returncode}); see {log_file}")
    return seconds, peak


def outputs(root: Path) -> dict[str, object]:
    """What the two modes must agree on: embedding manifests (minus timings), list rows, metrics."""
    import pandas as pd

    exp = root / "bench"
    manifest = json.loads(next(exp.glob("embeddings/epoch-000/_manifest.json")).read_text())
    manifest.pop("seconds", None)
    from pipeline.embedding.embed import load_embeddings

    vectors = load_embeddings(exp / "embeddings" / "epoch-000").vectors
    triplets = pd.read_parquet(next(exp.glob("triplets/epoch-001")))
    metrics = json.loads((exp / "metrics" / "epoch-000.json").read_text())
    for key in [k for k in metrics if "seconds" in k]:
        metrics.pop(key)
    baseline = json.loads(next((root / "baselines").glob("*.json")).read_text())
    baseline = {k: v for k, v in baseline.items() if "seconds" not in k}
    return {"manifest": manifest, "vectors": vectors.tobytes(), "triplets": triplets,
            "metrics": metrics, "baseline": baseline}


def same_value(a: object, b: object) -> bool:
    import pandas as pd

    return a.equals(b) if isinstance(a, pd.DataFrame) else a == b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 classes x (50 train + 5 val)")
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--val-per-class", type=int, default=50)
    parser.add_argument("--address", default="local:2", help="the [dask] address of the second run")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    a = parser.parse_args()
    if a.quick:
        a.classes, a.train_per_class, a.val_per_class = 20, 50, 5
    from datagen import make_tiny_imagenet

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = a.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        tree = work / "tiny-imagenet-200"
        t = time.perf_counter()
        if not (tree / "wnids.txt").is_file():
            make_tiny_imagenet(tree, a.classes, a.train_per_class, a.val_per_class, size=64,
                               grayscale=a.classes, cmyk=a.classes)
        n_images = a.classes * (a.train_per_class + a.val_per_class)
        print(f"tree: {a.classes} classes, {n_images:,} JPEGs of 64 px, written in {time.perf_counter() - t:.0f}s")
        table: dict[str, dict[str, tuple[float, int]]] = {}
        found = {}
        for mode, address in (("in-process", ""), (a.address, a.address)):
            root = work / f"artifacts-{mode.replace(':', '')}"
            config = work / "dataset.cfg"
            config.write_text(f"[dataset]\nsource = tiny-imagenet\nroot = {tree}\n")
            common_args = ["--local-scheduler", "--no-lock", "--artifacts-root", str(root), "--dask-address", address, "--compute-device", "cpu"]
            for task, args in STAGES:
                table.setdefault(task, {})[mode] = run_stage(task, args, common_args, config, work / f"{mode}.log")
                seconds, peak = table[task][mode]
                print(f"  {mode:>10}  {task:<14} {seconds:7.1f} s  {peak / 2**20:7.0f} MiB", flush=True)
            found[mode] = outputs(root)
        modes = list(found)
        same = {k: same_value(found[modes[0]][k], found[modes[1]][k]) for k in found[modes[0]]}
        print(f"\n| stage | in-process s | {a.address} s | ratio | in-process peak MiB | {a.address} peak MiB |")
        print("|---|---|---|---|---|---|")
        for task, by_mode in table.items():
            (s0, m0), (s1, m1) = by_mode[modes[0]], by_mode[modes[1]]
            print(f"| {task} | {s0:.1f} | {s1:.1f} | {s1 / s0:.2f}x | {m0 / 2**20:.0f} | {m1 / 2**20:.0f} |")
        print("\nidentical outputs: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in same.items()))
        if not all(same.values()):
            sys.exit("the two modes disagree")


if __name__ == "__main__":
    main()
