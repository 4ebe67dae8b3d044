"""Exact resume: `kill -9` of `luigi --module tasks RunAll` in the middle of a
training epoch, then a rerun, continues that epoch from its partial checkpoint
and ends with the same weights, bit for bit, as a run that was never
interrupted; and nothing half-written is taken as complete."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

import tasks
from pipeline.checkpoint import load_checkpoint
from tests.support import assert_succeeded, build, fast_config


def run_section(cfg: dict) -> dict:
    """The section of ``cfg`` holding experiment name, seed and epochs (whatever it is called)."""
    return next(values for values in cfg.values() if "epochs" in values)

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 3
TMP_DIR = re.compile(r"^\.tmp-epoch-\d{3}-\w+$")


def slow_config(tmp_path: Path, dataset_root: Path, root: Path) -> dict:
    """The fast configuration with 72 one-at-a-time-ish steps per epoch, so a kill lands inside one."""
    cfg = fast_config(tmp_path, dataset_root)
    cfg["artifacts"] = {"root": root}
    run_section(cfg)["epochs"] = EPOCHS
    cfg["TripletList"] = {**cfg["TripletList"], "triplets_per_query": 4}  # 144 triplets
    cfg["TrainEpoch"] = {**cfg["TrainEpoch"], "batch_size": 2, "checkpoint_every": 10}
    cfg["core"] = {"local_scheduler": "true", "log_level": "INFO"}
    return cfg


def luigi_env(config: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(LUIGI_CONFIG_PATH=str(config), PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def kill_inside_epoch(proc: subprocess.Popen, partial: Path, timeout: float = 240.0) -> bool:
    """SIGKILL the run once the epoch has saved a partial checkpoint; True if one was seen."""
    deadline = time.monotonic() + timeout
    seen = False
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.is_file():
            seen = True
            break
        time.sleep(0.02)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return seen


def final_state(root: Path) -> dict:
    return load_checkpoint(root / "test" / "train" / f"epoch-{EPOCHS:03d}" / "_checkpoint.pt")


def test_kill_9_mid_epoch_then_rerun_gives_bit_identical_weights(configure, tmp_path, tiny_imagenet, caplog):
    killed_root = tmp_path / "killed"
    config = configure(slow_config(tmp_path, tiny_imagenet, killed_root))
    log = tmp_path / "luigi-run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "luigi", "--module", "tasks", "RunAll",
                                 "--no-lock"], cwd=tmp_path,
                                env=luigi_env(config), stdout=out, stderr=subprocess.STDOUT)
        try:
            seen = kill_inside_epoch(proc, killed_root / "test" / "train" / ".partial-epoch-002.pt")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text(errors="replace")
    assert proc.returncode == -signal.SIGKILL, f"the run ended by itself before the kill:\n{text[-3000:]}"
    assert seen, f"epoch 2 never saved its progress:\n{text[-3000:]}"

    # What the kill left: complete epoch folders, or hidden temporary folders -- never a partial epoch=NNN.
    train = killed_root / "test" / "train"
    left = sorted(p.name for p in train.iterdir() if not p.name.startswith(".partial-"))
    assert {"epoch-000", "epoch-001"} <= set(left), left
    for name in left:
        if TMP_DIR.match(name):
            continue
        assert re.fullmatch(r"epoch-\d{3}", name), left
        folder = train / name
        assert (folder / "steps.parquet").is_file(), name
        assert load_checkpoint(folder / "_checkpoint.pt")["epoch"] == int(name[-3:])
    # The kill came while TrainEpoch(2) was running: epoch 2 and later are not done (unless the
    # machine was so slow that epoch 2 finished before the kill landed -- its folder is then complete).
    assert "epoch-003" not in left, left
    if "epoch 2: mean loss" not in text:
        assert "epoch-002" not in left, left
        assert not tasks.TrainEpoch(epoch=2).complete()
    assert tasks.TrainEpoch(epoch=1).complete()
    assert not (killed_root / "test" / "report").exists()

    # A kill during the save would leave a temporary folder with a half-written checkpoint: put one
    # there too, so the rerun has to ignore it.
    victim = 2 if "epoch-002" not in left else 3
    partial = train / f".tmp-epoch-{victim:03d}-0123456789"
    partial.mkdir()
    (partial / "_checkpoint.pt").write_bytes(b"PK\x03\x04 half a checkpoint")
    assert not tasks.TrainEpoch(epoch=victim).complete()

    # Rerun to completion (same configuration, in-process).
    luigi_done = {name for name in left if not TMP_DIR.match(name)}
    with caplog.at_level("INFO", logger="pipeline.training.partial"):
        result = build([tasks.RunAll()])
    if "epoch-002" not in left:  # the usual case: the kill came inside epoch 2, after a partial save
        assert re.search(r"resuming from .*\.partial-epoch-002\.pt at step (10|20|30|40|50|60|70)\b",
                         caplog.text), caplog.text
    assert not list(train.glob(".partial-*"))  # removed once the epochs completed
    assert_succeeded(result)
    assert (killed_root / "test" / "report" / f"epochs-{EPOCHS:03d}" / "index.html").is_file()
    assert luigi_done <= {p.name for p in train.iterdir()}

    # The uninterrupted reference in a second root.
    clean_root = tmp_path / "clean"
    configure(slow_config(tmp_path, tiny_imagenet, clean_root))
    result = build([tasks.RunAll()])
    assert_succeeded(result)

    resumed, clean = final_state(killed_root), final_state(clean_root)
    assert resumed["epoch"] == clean["epoch"] == EPOCHS
    assert resumed["model"].keys() == clean["model"].keys()
    for key, value in clean["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    for epoch in range(1, EPOCHS + 1):
        name = f"epoch-{epoch:03d}"
        a = pd.read_parquet(killed_root / "test" / "train" / name / "steps.parquet")
        b = pd.read_parquet(clean_root / "test" / "train" / name / "steps.parquet")
        assert len(a) == 72
        assert a["loss"].tolist() == b["loss"].tolist(), name
    # The interruption did not change what the rest of the pipeline saw either.
    for epoch in range(EPOCHS + 1):
        a = (killed_root / "test" / "metrics" / f"per_class/epoch-{epoch:03d}.parquet").read_bytes()
        b = (clean_root / "test" / "metrics" / f"per_class/epoch-{epoch:03d}.parquet").read_bytes()
        assert a == b, epoch
