"""Fault injection: SIGKILL at seeded random moments in every task type, a full
or read-only disk, and two runs of one experiment at once.

After a kill, a rerun completes and its triplet lists, final weights and metrics
are identical to an uninterrupted run's. The default suite kills once, in the
output written in the most steps (ValidateEpoch: sidecars, then the metrics JSON);
an epoch resumed from its partial checkpoint is killed by tests/test_resume.py, and a
folder renamed into place (IndexDataset) is tested in tests/test_atomic.py: the rename
step by step, and the sweep of what a killed write leaves. `pytest -m slow
tests/test_faults.py` kills once in every other task type too (IndexDataset and
TrainEpoch included), and runs the whole matrix (several seeded moments per task
type) with its pass counts.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from pipeline.checkpoint import load_checkpoint
from pipeline.embedding.embed import load_embeddings
from tests.support import assert_failed, fast_config, luigi_cli, write_overrides

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EPOCHS = 1
TASK_TYPES = ("IndexDataset", "PixelBaseline", "TripletList", "TrainEpoch", "EmbedEpoch", "ValidateEpoch", "Report")
SLOW_SEEDS = (1, 2, 3, 4)


def fault_config(tmp_path: Path, dataset_root: Path, root: Path) -> dict:
    """Mixed mining (so lists depend on embeddings), 36 steps per epoch and a partial save every 6 steps."""
    cfg = fast_config(tmp_path, dataset_root)
    cfg["artifacts"] = {"root": root}
    cfg["run"]["epochs"] = EPOCHS
    cfg["TripletList"].update(strategy="mixed", mined_share=0.5, triplets_per_query=2)
    cfg["TrainEpoch"].update(batch_size=2, checkpoint_every=6)
    return cfg


def start_run(config: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, LUIGI_CONFIG_PATH=str(config), PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1")
    with open(log, "wb") as out:
        return subprocess.Popen([str(BIN / "luigi"), "--module", "tasks", "RunAll", "--no-lock"], cwd=REPO,
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def kill_during(proc: subprocess.Popen, log: Path, task_type: str, rng: random.Random, timeout: float = 180) -> str:
    """SIGKILL ``proc`` a seeded random moment after a ``task_type`` task starts; returns what was running."""
    running = re.compile(r"running\s+(\w+)\(")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if task_type in running.findall(log.read_text(errors="replace")):
            break
        time.sleep(0.01)
    else:
        raise AssertionError(f"{task_type} never ran before the run ended:\n{log.read_text()[-3000:]}")
    # Most tasks here last a fraction of a second, training a few seconds.
    time.sleep(rng.uniform(0.0, 2.0 if task_type == "TrainEpoch" else 0.3))
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    found = running.findall(log.read_text(errors="replace"))
    return found[-1] if found else "?"


def outputs(root: Path) -> dict:
    """What must not depend on an interruption: triplet lists, final weights, embeddings, metrics."""
    exp = root / "test"
    lists = {e: pd.read_parquet(exp / "triplets" / f"epoch-{e:03d}") for e in range(1, EPOCHS + 1)}
    weights = load_checkpoint(exp / "train" / f"epoch-{EPOCHS:03d}" / "_checkpoint.pt")["model"]
    vectors = load_embeddings(exp / "embeddings" / f"epoch-{EPOCHS:03d}", "val").vectors
    metrics = {}
    for e in range(EPOCHS + 1):
        m = json.loads((exp / "metrics" / f"epoch-{e:03d}.json").read_text())
        m.pop("seconds", None)
        metrics[e] = m
    return {"lists": lists, "weights": weights, "vectors": vectors, "metrics": metrics}


def assert_same(a: dict, b: dict) -> None:
    for epoch, frame in a["lists"].items():
        pd.testing.assert_frame_equal(frame, b["lists"][epoch])
    assert a["weights"].keys() == b["weights"].keys()
    for key, value in a["weights"].items():
        assert torch.equal(value, b["weights"][key]), key
    assert (a["vectors"] == b["vectors"]).all()
    assert a["metrics"] == b["metrics"]


def assert_nothing_partial(root: Path) -> None:
    """Every non-hidden entry under the experiment is a complete output (no half-written final names),
    and the rerun swept the temporaries the kill left behind."""
    exp = root / "test"
    for folder in ("triplets", "train", "embeddings"):
        for entry in (exp / folder).iterdir():
            assert entry.name.startswith((".lock", ".partial-")) or re.fullmatch(r"epoch-\d{3}", entry.name), entry
    for entry in (exp / "report").iterdir():
        assert re.fullmatch(r"epochs-\d{3}", entry.name), entry
    assert not list((root / "datasets").glob(".tmp-*"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted run: the dataset and the outputs every interrupted run must reproduce."""
    from tests.datagen import make_tiny_imagenet

    base = tmp_path_factory.mktemp("reference")
    dataset = make_tiny_imagenet(base / "tiny-imagenet-200", n_classes=3, train_per_class=12, val_per_class=4)
    config = write_overrides(base, fault_config(base, dataset, base / "artifacts"))
    done = luigi_cli(["RunAll"], config)
    assert done.code == 0, done.output[-4000:]
    return dataset, outputs(base / "artifacts")


def kill_and_rerun(tmp_path: Path, reference: tuple[Path, dict], task_type: str, seed: int) -> str:
    dataset, expected = reference
    root = tmp_path / "artifacts"
    config = write_overrides(tmp_path, fault_config(tmp_path, dataset, root))
    log = tmp_path / "killed.log"
    proc = start_run(config, log)
    try:
        victim = kill_during(proc, log, task_type, random.Random(f"{task_type}-{seed}"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run ended by itself:\n{log.read_text()[-3000:]}"
    rerun = luigi_cli(["RunAll"], config)
    assert rerun.code == 0, rerun.output[-4000:]
    assert_same(expected, outputs(root))
    assert_nothing_partial(root)
    return victim


DEFAULT_KILLS = ("ValidateEpoch",)


@pytest.mark.parametrize("task_type", [t if t in DEFAULT_KILLS else pytest.param(t, marks=pytest.mark.slow)
                                       for t in TASK_TYPES])
def test_sigkill_during_each_task_type_then_rerun_is_identical(tmp_path, reference, task_type):
    kill_and_rerun(tmp_path, reference, task_type, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_fault_matrix_sigkill(tmp_path, reference, task_type, seed):
    kill_and_rerun(tmp_path, reference, task_type, seed)


# --------------------------------------------------------------------------- full and read-only disks

def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"a real full/read-only disk needs `mount` (root with CAP_SYS_ADMIN): {done.stderr.decode()}")


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    _mount_tmpfs(mount, "256k")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_fails_with_the_path_and_leaves_no_output(tmp_path, small_disk):
    """The embedded dataset's pixel store (16 MB) cannot fit on a 256 KiB disk."""
    cfg = fast_config(tmp_path, tmp_path)
    cfg["artifacts"] = {"root": small_disk}
    cfg["dataset"] = {"source": "embedded", "dask_scheduler": "synchronous"}
    outcome = luigi_cli(["IndexDataset"], write_overrides(tmp_path, cfg))
    assert_failed(outcome, "is full", str(small_disk / "datasets" / "embedded-28px"))
    assert not (small_disk / "datasets" / "embedded-28px").exists()
    assert not list((small_disk / "datasets").glob(".tmp-*"))


def test_read_only_artifacts_root_fails_with_the_path(tmp_path, tiny_imagenet, small_disk):
    cfg = fast_config(tmp_path, tiny_imagenet, shipped_lists=True)
    cfg["artifacts"] = {"root": small_disk}
    config = write_overrides(tmp_path, cfg)
    assert luigi_cli(["IndexDataset"], config).code == 0
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    outcome = luigi_cli(["TripletList", "--epoch", "1"], config)
    assert_failed(outcome, "read-only")
    assert not (small_disk / "test" / "triplets").exists()


# --------------------------------------------------------------------------- two runs at once

def test_two_runs_of_one_experiment_at_once_build_each_output_once(tmp_path, tiny_imagenet):
    """Different command lines (so Luigi's pid lock lets both in), local schedulers: each task's output
    is built by one of them while the other waits, and both end with the complete, uncorrupted result."""
    cfg = fast_config(tmp_path, tiny_imagenet, shipped_lists=True)
    config = write_overrides(tmp_path, cfg)
    env = dict(os.environ, LUIGI_CONFIG_PATH=str(config), PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([str(BIN / "luigi"), "--module", "tasks", "RunAll", *extra], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
             for extra in ([], ["--workers", "1"])]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [log[-3000:] for log in logs]
    # Each epoch was trained by exactly one process: the other found it complete when scheduling,
    # or waited for it and then found it complete.
    for epoch in range(cfg["run"]["epochs"] + 1):
        name = f"TrainEpoch(experiment=test, epoch={epoch},"
        started = [log.count(f"running   {name}") for log in logs]
        waited = [int(bool(re.search(re.escape(name) + r"[^\n]*was completed by another process", log)))
                  for log in logs]
        assert sum(started) - sum(waited) == 1, (epoch, started, waited)
    exp = tmp_path / "artifacts" / "test"
    assert (exp / "report" / f"epochs-{cfg['run']['epochs']:03d}" / "index.html").is_file()
    assert_nothing_partial(tmp_path / "artifacts")


def test_the_same_command_twice_is_turned_away_while_the_first_runs(tmp_path, tiny_imagenet):
    """Luigi's pid lock (on in the shipped config) refuses a second identical command on the machine."""
    cfg = fast_config(tmp_path, tiny_imagenet)
    # A first run that lasts long enough to be caught running: plain lists, one triplet per step.
    cfg["TripletList"].update(strategy="uniform", triplets_per_query=2)
    cfg["TrainEpoch"].update(batch_size=1)
    cfg["run"]["epochs"] = 4
    config = write_overrides(tmp_path, cfg)
    log = tmp_path / "first.log"
    first = start_run_plain(config, log)
    try:
        deadline = time.monotonic() + 120
        while "Done scheduling tasks" not in log.read_text(errors="replace") and time.monotonic() < deadline:
            assert first.poll() is None, log.read_text()[-3000:]
            time.sleep(0.05)
        second = luigi_cli(["RunAll"], config, timeout=60)
        assert "already running" in second.output, second.output[-2000:]
        assert first.poll() is None  # the first was running all along
    finally:
        # The first run has shown what it must; what it computes is tested elsewhere.
        first.kill()
        first.wait(timeout=60)


def start_run_plain(config: Path, log: Path) -> subprocess.Popen:
    """``luigi --module tasks RunAll`` exactly as a user types it (Luigi's pid lock on)."""
    env = dict(os.environ, LUIGI_CONFIG_PATH=str(config), PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1")
    with open(log, "wb") as out:
        return subprocess.Popen([str(BIN / "luigi"), "--module", "tasks", "RunAll"], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
