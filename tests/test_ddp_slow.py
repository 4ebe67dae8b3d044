"""Distributed training cases too long for the default suite (`pytest -m slow tests/test_ddp_slow.py`):
a peer that never joins, a diverging loss on two ranks, two "nodes" on this machine,
the command killed mid-epoch (its ranks die with it), a one-process partial resumed
on two ranks, and validation precision after a demo-like epoch on 1 vs 2 ranks."""

from __future__ import annotations

import json
import os
import subprocess

import pandas as pd
import pytest
import torch

import tasks
from pipeline.checkpoint import load_checkpoint
from pipeline.distributed.launch import free_port
from pipeline.training.epoch import train_epoch
from pipeline.training.settings import PartialSaveSettings
from tests.support import BIN, REPO, assert_failed, assert_succeeded, build, luigi_cli, stop_process
from tests.test_ddp_task import shipped_plus_test_data, steps_of

pytestmark = pytest.mark.slow


def test_a_peer_that_never_joins_ends_the_epoch_after_timeout_s(configure, tmp_path, tiny_imagenet):
    config = configure(shipped_plus_test_data(tmp_path, tiny_imagenet))
    rendezvous = f"127.0.0.1:{free_port()}"
    outcome = luigi_cli(["TrainEpoch", "--epoch", "1", "--nnodes", "2", "--rendezvous", rendezvous,
                         "--timeout-s", "5", "--no-lock"], config)
    assert_failed(outcome, f"the ranks did not all meet at {rendezvous} within 5 s", "--node-rank 0 .. 1")
    train = tmp_path / "artifacts" / "test" / "train"
    assert sorted(p.name for p in train.iterdir()) == ["epoch-000"]


def test_a_diverging_loss_on_two_ranks_fails_with_the_training_error(configure, tmp_path, tiny_imagenet):
    config = configure(shipped_plus_test_data(tmp_path, tiny_imagenet, lr=1e20))
    outcome = luigi_cli(["TrainEpoch", "--epoch", "1", "--processes", "2", "--no-lock"], config)
    assert_failed(outcome, "TrainingError: epoch 1 step", "not finite")
    train = tmp_path / "artifacts" / "test" / "train"
    assert sorted(p.name for p in train.iterdir()) == ["epoch-000"]


def test_two_nodes_on_this_machine_train_one_epoch_with_two_commands(configure, tmp_path, tiny_imagenet):
    cfg = shipped_plus_test_data(tmp_path, tiny_imagenet)
    cfg["loss"]["reduce"] = "mean"  # a continuous loss for the comparison (see test_ddp_task)
    config = configure(cfg)
    layout = ["--epoch", "1", "--nnodes", "2", "--rendezvous", f"127.0.0.1:{free_port()}", "--timeout-s", "120",
              "--no-lock"]
    env = dict(os.environ, LUIGI_CONFIG_PATH=str(config), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    # Node 1 first: it runs none of the graph and waits for node 0's inputs on the shared root.
    with open(tmp_path / "node1.log", "wb") as log:
        node_1 = subprocess.Popen([str(BIN / "luigi"), "--module", "tasks", "JoinEpoch", *layout, "--node-rank", "1"],
                                  cwd=REPO,
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        node_0 = luigi_cli(["TrainEpoch", *layout], config, timeout=300)
        assert node_1.wait(timeout=120) == 0, (tmp_path / "node1.log").read_text()[-4000:]
    finally:
        stop_process(node_1)
    assert node_0.code == 0, node_0.output[-4000:]
    assert "epoch 1: trained on 2 ranks" in node_0.output
    node_1_log = (tmp_path / "node1.log").read_text()
    assert "Scheduled 1 tasks of which:\n* 1 ran successfully:\n    - 1 JoinEpoch(" in node_1_log
    result = build([tasks.TrainEpoch(experiment="one", epoch=1)])
    assert_succeeded(result)
    root = tmp_path / "artifacts"
    assert steps_of(root, "test")["loss"].tolist() == pytest.approx(steps_of(root, "one")["loss"].tolist(),
                                                                    rel=0.02, abs=1e-3)
    # One process continues from the 2-node checkpoint (EmbedEpoch reads it for epoch 2's list).
    result = build([tasks.TrainEpoch(experiment="test", epoch=2)])
    assert_succeeded(result)
    assert load_checkpoint(root / "test" / "train" / "epoch-002" / "_checkpoint.pt")["epoch"] == 2


def test_killing_the_command_kills_its_ranks_and_writes_nothing(configure, tmp_path, tiny_imagenet):
    """SIGKILL of the luigi process mid-epoch: its ranks die with it (no orphan trains on and
    writes the epoch behind a rerun's back), and the rerun resumes from the partial checkpoint."""
    import signal
    import time

    import psutil

    config = configure(shipped_plus_test_data(tmp_path, tiny_imagenet, checkpoint_every=1))
    env = dict(os.environ, LUIGI_CONFIG_PATH=str(config), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    train = tmp_path / "artifacts" / "test" / "train"
    partial = train / ".partial-epoch-001.pt"
    command = [str(BIN / "luigi"), "--module", "tasks", "TrainEpoch", "--epoch", "1", "--processes", "2",
               "--no-lock"]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert partial.exists(), "the epoch never saved progress"
        ranks = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        gone, alive = psutil.wait_procs(ranks, timeout=30)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        stop_process(proc)
    assert not (train / "epoch-001").exists()
    assert luigi_cli(command[3:], config).code == 0
    assert (train / "epoch-001").is_dir() and not partial.exists()


class Killed(Exception):
    """Stands for a kill of the one-process run."""


def test_a_one_process_partial_resumes_on_two_ranks(configure, tmp_path, tiny_imagenet):
    config = configure(shipped_plus_test_data(tmp_path, tiny_imagenet))
    task = tasks.TrainEpoch(epoch=1)
    result = build([task.requires()["previous"], task.requires()["triplets"]])
    assert_succeeded(result)

    def kill(step: int, total: int, loss: float) -> None:
        if step == 3:
            raise Killed

    inputs = task.input()
    with pytest.raises(Killed):
        train_epoch(f"{inputs['previous'].path}/_checkpoint.pt", inputs["triplets"].path, inputs["index"].path,
                    task.output().path, task.epoch_settings(), epoch=1, seed=0, device=torch.device("cpu"),
                    saves=PartialSaveSettings(checkpoint_every=2), progress=kill)
    partial = tmp_path / "artifacts" / "test" / "train" / ".partial-epoch-001.pt"
    saved = torch.load(partial, weights_only=True)
    assert saved["step"] == 2

    done = luigi_cli(["TrainEpoch", "--epoch", "1", "--processes", "2", "--no-lock"], config)
    assert done.code == 0, done.output[-4000:]
    assert "epoch 1: trained on 2 ranks" in done.output
    steps = steps_of(tmp_path / "artifacts", "test")
    assert steps["step"].tolist() == list(range(len(steps))) and len(steps) > 2
    # The first two rows are the one-process run's, timings included: the ranks resumed, not restarted.
    assert [list(r) for r in steps.iloc[:2].itertuples(index=False)] == [list(r) for r in saved["rows"]]
    assert not partial.exists()


def test_validation_precision_after_a_demo_epoch_is_the_same_on_two_ranks(configure, tmp_path):
    """The shipped demo configuration (embedded Fashion-MNIST, batched lists), one epoch, 1 vs 2 ranks."""
    config = configure({"artifacts": {"root": tmp_path / "artifacts"}, "run": {"epochs": 1}, "resources": {"gpu": 2}})
    precision = {}
    for experiment, processes in (("one", "1"), ("two", "2")):
        done = luigi_cli(["ValidateEpoch", "--epoch", "1", "--experiment", experiment,
                          "--TrainEpoch-processes", processes, "--no-lock"], config, timeout=900)
        assert done.code == 0, done.output[-4000:]
        metrics = json.loads((tmp_path / "artifacts" / experiment / "metrics" / "epoch-001.json").read_text())
        precision[experiment] = metrics["precision_at_30_val"]
    assert "epoch 1: trained on 2 ranks" in done.output
    assert precision["two"] == pytest.approx(precision["one"], abs=0.005), precision
    steps = {e: pd.read_parquet(tmp_path / "artifacts" / e / "train" / "epoch-001" / "steps.parquet")
             for e in precision}
    assert steps["two"]["images"].tolist() == steps["one"]["images"].tolist()
