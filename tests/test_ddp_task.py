"""`TrainEpoch` on 2 gloo ranks through the real command: the same epoch as one
process with a checkpoint of the one-process layout, and a killed rank that ends
the command at once with nothing written, leaving a partial checkpoint that one
process resumes.

The in-process runs read the same settings as the subprocesses (the shipped
luigi.cfg with the test data on top), so both sides train one experiment's list.
"""

from __future__ import annotations

import configparser

import pandas as pd
import pytest
import torch

import tasks
from pipeline.checkpoint import load_checkpoint
from pipeline.network import ModelSettings, build_model
from tests.support import REPO, assert_failed, assert_succeeded, build, fast_config, luigi_cli


def shipped_plus_test_data(tmp_path, dataset_root, **train_epoch) -> dict:
    """The shipped luigi.cfg (batched lists, in-batch "all" triplets) on the tiny test data."""
    parser = configparser.ConfigParser()
    parser.read(REPO / "luigi.cfg")
    cfg = {s: dict(parser.items(s, raw=True)) for s in parser.sections()}
    for section, values in fast_config(tmp_path, dataset_root, shipped_lists=True).items():
        cfg.setdefault(section, {}).update(values)
    cfg["run"]["epochs"] = 1
    cfg["TrainEpoch"].update(train_epoch)
    cfg["resources"]["gpu"] = 2  # each of the two ranks holds one unit
    return cfg


def steps_of(root, experiment: str, epoch: int = 1) -> pd.DataFrame:
    return pd.read_parquet(root / experiment / "train" / f"epoch-{epoch:03d}" / "steps.parquet")


def train_folder(root, experiment: str = "test"):
    return root / experiment / "train"


def test_two_processes_train_the_epoch_one_process_trains(configure, tmp_path, tiny_imagenet):
    cfg = shipped_plus_test_data(tmp_path, tiny_imagenet)
    # The mean over all triplets: on 36 images the shipped mean over active ones averages a handful of
    # triplets after a few steps, and float32 noise flips which; the comparison needs a continuous loss.
    cfg["loss"]["reduce"] = "mean"
    config = configure(cfg)
    root = tmp_path / "artifacts"
    done = luigi_cli(["TrainEpoch", "--epoch", "1", "--processes", "2", "--no-lock"], config)
    assert done.code == 0, done.output[-4000:]
    assert "epoch 1: trained on 2 ranks" in done.output
    train = train_folder(root)
    assert sorted(p.name for p in train.iterdir()) == ["epoch-000", "epoch-001"]  # no partial, no temporary

    # The same epoch in one process (another experiment, the same list): same steps and losses.
    result = build([tasks.TrainEpoch(experiment="one", epoch=1)])
    assert_succeeded(result)
    two, one = steps_of(root, "test"), steps_of(root, "one")
    assert len(one) > 4 and two["images"].tolist() == one["images"].tolist()
    assert two["triplets"].tolist() == one["triplets"].tolist()
    assert two["loss"].iloc[0] == pytest.approx(one["loss"].iloc[0], rel=1e-4)
    assert two["loss"].tolist() == pytest.approx(one["loss"].tolist(), rel=0.02, abs=1e-3)  # float32 noise
    state, ref = load_checkpoint(train / "epoch-001" / "_checkpoint.pt"), load_checkpoint(
        train_folder(root, "one") / "epoch-001" / "_checkpoint.pt")
    assert {k: v.shape for k, v in state["model"].items()} == {k: v.shape for k, v in ref["model"].items()}
    assert state["optimizer"]["param_groups"] == ref["optimizer"]["param_groups"]
    build_model(ModelSettings(**state["model_settings"])).load_state_dict(state["model"], strict=True)
    # (tests/test_ddp_slow.py continues such a checkpoint in one process, through EmbedEpoch and TrainEpoch.)


@pytest.mark.slow  # fault injection, like the matrix of tests/test_faults.py
def test_a_killed_rank_fails_the_command_at_once_and_one_process_resumes_its_partial(configure, tmp_path,
                                                                                    tiny_imagenet, monkeypatch,
                                                                                    caplog):
    config = configure(shipped_plus_test_data(tmp_path, tiny_imagenet, checkpoint_every=2))
    root = tmp_path / "artifacts"
    # Rank 1 SIGKILLs itself after step 3; rank 0 saved its partial checkpoint after step 2 and
    # cannot have saved another (step 4 needs rank 1). A hang would fail through the subprocess timeout.
    monkeypatch.setenv("KILL_RANK_AT", "1:3")  # read by tests/rank_faults/sitecustomize.py in every process
    killed = luigi_cli(["TrainEpoch", "--epoch", "1", "--processes", "2", "--no-lock"], config,
                       pythonpath=[REPO / "tests" / "rank_faults"])
    monkeypatch.delenv("KILL_RANK_AT")
    assert_failed(killed, "rank 1 of 2 (node 0, process 1) was killed by SIGKILL", "TrainEpoch")
    train = train_folder(root)
    assert not (train / "epoch-001").exists() and not list(train.glob(".tmp-*"))
    partial = train / ".partial-epoch-001.pt"
    saved = torch.load(partial, weights_only=True)
    assert saved["step"] == 2 and len(saved["rows"]) == 2

    # Resumed in one process: its own fingerprint matches the N=2 partial's (N is not part of it).
    with caplog.at_level("INFO", logger="pipeline.training.partial"):
        result = build([tasks.TrainEpoch(epoch=1)])
    assert_succeeded(result)
    assert "at step 2" in caplog.text and not partial.exists()
    resumed = steps_of(root, "test")
    assert resumed["step"].tolist() == list(range(len(resumed)))
    assert resumed["loss"].iloc[:2].tolist() == [row[2] for row in saved["rows"]]
