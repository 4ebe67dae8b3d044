"""``python -m pipeline.show``: summaries of a triplet list and of a dataset."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import tasks
from pipeline.show import main
from tests.datagen import corrupt_file
from tests.support import assert_succeeded, build, fast_config

REPO = Path(__file__).resolve().parents[1]
CLASS_NAMES = ["goldfish", "European fire salamander", "bullfrog"]  # the fixture's 3 wnids, sorted


@pytest.fixture
def built(configure, tmp_path, tiny_imagenet) -> Path:
    """Artifacts root with the tiny_imagenet dataset indexed and epoch 1's triplet list."""
    configure(fast_config(tmp_path, tiny_imagenet))
    result = build([tasks.TripletList(epoch=1)])
    assert_succeeded(result)
    return tmp_path / "artifacts"


def _check_triplet_report(out: str, artifacts: Path) -> None:
    trip = pd.read_parquet(artifacts / "test" / "triplets" / "epoch-001")
    assert "rows: 36" in out
    assert "queries covered: 36 of 36 training images (100.0%)" in out
    assert "queries per image: min 1, max 1" in out
    assert "strategy uniform" in out
    negatives = trip["negative_label"].value_counts()
    for label, name in enumerate(CLASS_NAMES):
        # per class: label, class name, queries, times as negative, training images
        line = rf"^\s*{label}\s+{re.escape(name)}\s+12\s+{negatives.get(label, 0)}\s+12\s*$"
        assert re.search(line, out, re.MULTILINE), (name, out)
    assert "sample:" in out


def test_triplets_summary(built, capsys):
    code = main(["--artifacts", str(built), "triplets", "--experiment", "test", "--epoch", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    _check_triplet_report(captured.out, built)
    assert "epoch-001" in captured.out and "seed 0" in captured.out


def test_triplets_summary_with_options_after_the_subcommand(built, capsys):
    code = main(["triplets", "--experiment", "test", "--epoch", "1", "--artifacts", str(built)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    _check_triplet_report(captured.out, built)


def test_triplets_summary_uses_artifacts_in_the_working_directory(built, capsys, monkeypatch):
    monkeypatch.chdir(built.parent)  # default --artifacts is ./artifacts
    assert main(["triplets", "--experiment", "test", "--epoch", "1"]) == 0
    _check_triplet_report(capsys.readouterr().out, built)


def test_triplets_summary_as_a_subprocess(built):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.show", "--artifacts", str(built), "triplets", "--experiment", "test",
         "--epoch", "1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    _check_triplet_report(proc.stdout, built)


def test_missing_epoch_is_a_clear_error_without_traceback(built, capsys):
    code = main(["--artifacts", str(built), "triplets", "--experiment", "test", "--epoch", "5"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith("error: ")
    assert "epoch-005" in captured.err and "TripletList" in captured.err
    assert "Traceback" not in captured.err + captured.out


def test_missing_epoch_as_a_subprocess_exits_2(built):
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.show", "--artifacts", str(built), "triplets", "--experiment", "nope",
         "--epoch", "1"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "nope" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_dataset_is_a_clear_error(tmp_path, capsys):
    code = main(["--artifacts", str(tmp_path / "empty"), "dataset"])
    captured = capsys.readouterr()
    assert code == 2
    assert "IndexDataset" in captured.err and "Traceback" not in captured.err


def test_bad_experiment_name_is_a_clear_error(built, capsys):
    code = main(["--artifacts", str(built), "triplets", "--experiment", "../etc", "--epoch", "1"])
    assert code == 2
    assert "experiment name" in capsys.readouterr().err


def test_dataset_summary(built, capsys):
    assert main(["--artifacts", str(built), "dataset"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out)  # nothing skipped: the output is just the summary
    assert summary["source"] == "tiny-imagenet"
    assert summary["images"] == {"train": 36, "val": 12}
    assert summary["classes"] == 3 and summary["stored_size"] == 16 and summary["skipped"] == 0


def test_dataset_summary_lists_skipped_files(configure, tmp_path, tiny_imagenet, capsys):
    bad = next((tiny_imagenet / "val" / "images").iterdir())
    corrupt_file(bad, "zero")
    cfg = fast_config(tmp_path, tiny_imagenet)
    cfg["dataset"]["on_bad_image"] = "skip"
    configure(cfg)
    assert_succeeded(build([tasks.IndexDataset()]))
    assert main(["--artifacts", str(tmp_path / "artifacts"), "dataset"]) == 0
    out = capsys.readouterr().out
    assert '"skipped": 1' in out and '"val": 11' in out
    assert "skipped files:" in out and f"val/images/{bad.name}" in out


def test_several_datasets_need_dataset_option(built, configure, tmp_path, tiny_imagenet, capsys):
    cfg = fast_config(tmp_path, tiny_imagenet)
    cfg["dataset"]["stored_size"] = 8
    configure(cfg)
    assert_succeeded(build([tasks.IndexDataset()]))
    assert main(["--artifacts", str(built), "dataset"]) == 2
    err = capsys.readouterr().err
    assert "--dataset" in err and "tiny-imagenet-16px" in err and "tiny-imagenet-8px" in err
    assert main(["--artifacts", str(built), "--dataset", "tiny-imagenet-8px", "dataset"]) == 0
    assert json.loads(capsys.readouterr().out)["stored_size"] == 8
