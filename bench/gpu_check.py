"""One check of a CUDA machine, done in under 8 minutes, printed as one table.

    make gpu-check ARGS="--out $OUT/gpu-check.md"            # sets up .venv, then runs this
    .venv/bin/python bench/gpu_check.py [--out FILE] [--only train,embed] [--deadline 420]
    .venv/bin/python bench/gpu_check.py --device cpu --quick  # CPU dry run of every CPU-able path

Parts, in order, each in its own process with its own time budget (``--budget
part=seconds``) inside a global deadline; a part that fails or runs out of time
gets a FAIL row with its error and the next part runs:

* ``env``: the GPU(s), torch and CUDA versions.
* ``tests``: pytest over the test modules with GPU cases (tests/test_gpu.py ...).
* ``train``: TrainEpoch's code path (``train_one_epoch``) on a Tiny ImageNet-shaped
  store: triplets/s, images/s and peak GPU memory for ResNet-18 at 64 px (uniform
  and default batched lists) and the course's ResNet-50 at 224; goal: an epoch of
  100k triplets with ResNet-18 at 64 px in at most 60 s on one H200.
* ``embed``: EmbedEpoch's code path (``embed_images``): images/s.
* ``agree``: ``luigi --module tasks RunAll --epochs 2`` with ``--compute-device cpu``
  and ``cuda`` side by side; validation precision@30 within 0.01.
* ``ddp``: ``TrainEpoch --processes 2`` where two GPUs are present.

Exit code 1 if any row is FAIL. Nothing is downloaded (random weights in the
pretrained architectures).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpu_check_rows import REPO, Row, last_error, read_rows, record, render

# Fixed-work parts first; train and embed size their work to the time they are given,
# so they come last and take what the global deadline leaves.
PARTS = ("env", "tests", "agree", "ddp", "train", "embed")
BUDGET = {"env": 60, "tests": 120, "train": 150, "embed": 60, "agree": 210, "ddp": 150}
QUICK_BUDGET = {"env": 60, "tests": 120, "train": 120, "embed": 60, "agree": 240, "ddp": 60}
GPU_ONLY = ("tests", "train", "embed", "agree", "ddp")  # skipped when the env part found no GPU on a CUDA run
WALL_GOAL = 480.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: a dry run without a GPU")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (with --device cpu: the dry run)")
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts out of {','.join(PARTS)}")
    ap.add_argument("--out", type=Path, help="also write the table (and errors) to this Markdown file")
    ap.add_argument("--deadline", type=float, help="global limit in seconds (default 420; 300 with --quick)")
    ap.add_argument("--budget", action="append", default=[], metavar="PART=SECONDS", help="a part's own limit")
    ap.add_argument("--r18-stem", default="small", choices=("small", "small-s2", "imagenet"),
                    help="stem of the ResNet-18 64 px workloads (small: 3x3/1, the model default for 28-64 px)")
    ap.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one, removed at the end)")
    # Internal: run one part in this process (the orchestrator starts one process per part).
    ap.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--part-seconds", type=float, default=60.0, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.only = [p.strip() for p in a.only.split(",") if p.strip()]
    unknown = set(a.only) - set(PARTS)
    if unknown:
        ap.error(f"--only: unknown part(s) {', '.join(sorted(unknown))}; use {','.join(PARTS)}")
    budgets = dict(QUICK_BUDGET if a.quick else BUDGET)
    for item in a.budget:
        name, _, seconds = item.partition("=")
        if name not in PARTS or not seconds.replace(".", "", 1).isdigit():
            ap.error(f"--budget {item!r}: use PART=SECONDS with PART one of {','.join(PARTS)}")
        budgets[name] = float(seconds)
    a.budgets = budgets
    if a.deadline is None:
        a.deadline = 300.0 if a.quick else 420.0
    return a


def run_part(a: argparse.Namespace) -> None:
    """Child process: run part ``a.part``, recording rows into ``a.rows``."""
    from gpu_check_runs import run_agree, run_ddp, run_env, run_tests

    def rec(row: Row) -> None:
        record(a.rows, row)

    if a.part in ("train", "embed"):
        from gpu_check_speed import run_embed, run_train

        (run_train if a.part == "train" else run_embed)(a, rec)
    else:
        {"env": run_env, "tests": run_tests, "agree": run_agree, "ddp": run_ddp}[a.part](a, rec)


def stop_part(proc: subprocess.Popen) -> None:
    """SIGTERM first: the part then ends the commands it started in their own sessions."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def spawn_part(a: argparse.Namespace, part: str, seconds: float) -> tuple[list[Row], str | None]:
    """Run ``part`` in a child process with a hard time limit; its rows, and an error if it broke."""
    rows_file, log = a.workdir / f"{part}.rows.jsonl", a.workdir / "logs" / f"part-{part}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", part, "--rows", str(rows_file),
           "--part-seconds", str(seconds), "--device", a.device, "--workdir", str(a.workdir),
           "--r18-stem", a.r18_stem, *(["--quick"] if a.quick else [])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            stop_part(proc)
            return read_rows(rows_file), f"stopped at its time limit ({seconds:.0f} s)"
        except BaseException:
            # Ctrl-C or SIGTERM to the check: the part (in its own session) and the
            # commands it started must not train on against a deleted workdir.
            stop_part(proc)
            raise
    if code != 0:
        return read_rows(rows_file), f"exit {code}: {last_error(log)}"
    return read_rows(rows_file), None


def orchestrate(a: argparse.Namespace) -> int:
    started = time.perf_counter()
    rows: list[Row] = []
    errors: list[str] = []
    gpus: int | None = None
    for part in PARTS:
        if part not in a.only:
            continue
        left = a.deadline - (time.perf_counter() - started)
        if a.device == "cuda" and gpus == 0 and part in GPU_ONLY:
            rows.append(Row(part, part, "not run: no CUDA GPU (see the device row)", "", "skip"))
            continue
        if left < 10:
            rows.append(Row(part, part, f"not run: global deadline of {a.deadline:.0f} s reached", "", "FAIL"))
            continue
        seconds = min(a.budgets[part], left)
        print(f"[gpu-check] {part}: running (limit {seconds:.0f} s)", file=sys.stderr, flush=True)
        t = time.perf_counter()
        got, error = spawn_part(a, part, seconds)
        rows += got
        gpus = next((r.data["gpus"] for r in got if "gpus" in r.data), gpus)
        print(f"[gpu-check] {part}: {'FAILED: ' + error if error else 'done'} in {time.perf_counter() - t:.0f} s",
              file=sys.stderr, flush=True)
        if error:
            log = a.workdir / "logs" / f"part-{part}.log"
            tail = log.read_text(errors="replace").splitlines()[-25:] if log.is_file() else []
            print("\n".join(f"    {ln}" for ln in tail), file=sys.stderr, flush=True)
            rows.append(Row(part, f"{part} part", error, "runs to the end", "FAIL"))
            errors.append(f"### {part}\n\n{error}\n\n```\n" + "\n".join(tail) + "\n```")
    wall = time.perf_counter() - started
    on_gpu = a.device == "cuda" and not a.quick
    rows.append(Row("total", "gpu-check wall time", f"{wall:.0f} s", f"< {WALL_GOAL:.0f} s" if on_gpu else "",
                    ("pass" if wall < WALL_GOAL else "FAIL") if on_gpu else "info"))
    table = render(rows)
    print(table, flush=True)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        text = f"# gpu-check ({a.device}{', quick' if a.quick else ''})\n\n{table}\n"
        if errors:
            text += "\n## Errors\n\n" + "\n\n".join(errors) + "\n"
        a.out.write_text(text)
    return 1 if any(r.status == "FAIL" for r in rows) else 0


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.part:
        run_part(a)
        return 0
    keep = a.workdir is not None
    a.workdir = (a.workdir or Path(tempfile.mkdtemp(prefix="gpu-check-"))).resolve()
    (a.workdir / "logs").mkdir(parents=True, exist_ok=True)
    for stale in a.workdir.glob("*.rows.jsonl"):
        stale.unlink()
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so running parts are stopped.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    try:
        return orchestrate(a)
    finally:
        if not keep:
            shutil.rmtree(a.workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
