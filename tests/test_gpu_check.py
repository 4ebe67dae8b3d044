"""`bench/gpu_check.py` (make gpu-check) in its CPU dry run, through the real command.

The GPU figures themselves need a CUDA machine; here the script proves its code
paths: TrainEpoch's and EmbedEpoch's on tiny sizes, the table, the per-part time
limits (a part out of time is a FAIL row, the rest still run, exit code 1) and
``--out``. The whole dry run (GPU tests, two RunAll commands) is slow-marked.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEADER = "| check | value | goal | result |"


def gpu_check(tmp_path: Path, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess, dict[str, list[str]]]:
    """Run the dry run; return the process and the table's rows by check name (value, goal, result)."""
    cmd = [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--device", "cpu", "--quick",
           "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "gpu-check.md"), *args]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.stdout.count(HEADER) == 1, proc.stdout + proc.stderr  # one table, on stdout
    rows = {}
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 4 and cells[0] not in ("check", "---"):
            rows[cells[0]] = cells[1:]
    return proc, rows


def assert_embed_part_stopped(proc: subprocess.CompletedProcess, rows: dict[str, list[str]], tmp_path: Path) -> None:
    """The embed part, given 1 s, is a FAIL row; the table still comes, on stdout and in --out; exit 1."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert rows["embed part"] == ["stopped at its time limit (1 s)", "runs to the end", "FAIL"]
    assert "[gpu-check] embed: FAILED" in proc.stderr
    written = (tmp_path / "gpu-check.md").read_text()
    assert HEADER in written and "## Errors" in written and "### embed" in written


def test_a_part_out_of_time_is_a_fail_row_and_the_table_still_comes(tmp_path: Path):
    """The cheap default-suite case: the device row, a part stopped at its limit, exit 1, --out."""
    proc, rows = gpu_check(tmp_path, "--only", "env,embed", "--budget", "embed=1", timeout=120)
    assert rows["device"][0].startswith("cpu dry run") and rows["device"][2] == "info"
    assert_embed_part_stopped(proc, rows, tmp_path)


@pytest.mark.slow
def test_dry_run_measures_training_and_reports_a_part_out_of_time(tmp_path: Path):
    proc, rows = gpu_check(tmp_path, "--only", "train,embed", "--budget", "embed=1", timeout=300)
    assert_embed_part_stopped(proc, rows, tmp_path)
    uniform = rows["TrainEpoch ResNet-18 32 px (small stem), uniform list: throughput"]
    assert re.match(r"[\d,]+ triplets/s, [\d,]+ images/s, peak n/a on cpu", uniform[0]) and uniform[2] == "info"
    goal = rows["TrainEpoch ResNet-18 32 px (small stem), uniform list: epoch of 100k triplets"]
    assert re.fullmatch(r"[\d,.]+ s", goal[0]) and goal[1] == "<= 60 s on one H200" and goal[2] == "skip"
    batched = rows["TrainEpoch ResNet-18 32 px (small stem), default batched list: throughput"]
    assert "listed" in batched[0] and "in-loss triplets/s" in batched[0]
    assert re.match(r"[\d,]+ triplets/s", rows["TrainEpoch course ResNet-50, imagenet stem, 32 -> 48 px, uniform "
                                               "list: throughput"][0])


@pytest.mark.slow
def test_whole_dry_run_passes(tmp_path: Path):
    proc, rows = gpu_check(tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert rows["device"][0].startswith("cpu dry run")
    tests = next(v for k, v in rows.items() if k.startswith("GPU tests (") and "test_gpu.py" in k)
    assert tests[2] == "skip" and "passed" in tests[0] and "failed" not in tests[0]
    assert rows["precision@30 agreement, cpu vs cpu2 (same seed)"] == ["\\|difference\\| = 0.0000", "<= 0.01", "pass"]
    assert re.match(r"0\.\d{4} \(command took", rows["precision@30 after 2 epochs, RunAll on cpu"][0])
    assert any(k.startswith("EmbedEpoch ResNet-18") and "images/s" in v[0] for k, v in rows.items())
    assert rows["2-GPU DDP: TrainEpoch --epoch 1 --processes 2"][2] == "skip"
    assert not [k for k, v in rows.items() if v[2] == "FAIL"]
