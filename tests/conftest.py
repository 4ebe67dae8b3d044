"""Shared fixtures: a clean Luigi registry and config per test, tiny datasets."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Callable

import luigi
import luigi.configuration
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.data.indexing import IndexSettings, build_index
from pipeline.data.pixel_store import open_store, read_index
from tests.datagen import make_image_folder, make_tiny_imagenet

os.environ.setdefault("DASK_SCHEDULER", "synchronous")


def fast_config(tmp_path: Path, dataset_root: Path, source: str = "tiny-imagenet", *,
                shipped_lists: bool = False) -> dict[str, dict[str, object]]:
    """A configuration that runs the whole graph in seconds on tiny data.

    Its triplet lists are plain uniform ones, one row per training image; with
    ``shipped_lists`` it leaves ``[TripletList] strategy`` and ``triplets_per_query``
    unset, so layered over the shipped luigi.cfg it keeps that file's batched lists.
    """
    lists = {} if shipped_lists else {"strategy": "uniform", "triplets_per_query": 1}
    return {
        "artifacts": {"root": tmp_path / "artifacts"},
        "run": {"experiment": "test", "seed": 0, "epochs": 2},
        "dataset": {"source": source, "root": dataset_root, "stored_size": 16, "dask_scheduler": "synchronous"},
        "model": {"arch": "resnet18", "width": 8, "embedding_dim": 8, "stem": "small-s2"},
        "TripletList": {**lists, "dask_scheduler": "synchronous", "n_blocks": 2},
        "TrainEpoch": {"batch_size": 8, "lr": 0.01},
        "EmbedEpoch": {"batch_size": 32},
        "compute": {"device": "cpu", "threads": 1},
        "ValidateEpoch": {"train_queries": 12, "figure_queries": 2, "figure_k": 3, "triplets": 30},
    }


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread per test: on two cores, tiny models run faster without OpenMP contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def task_errors():
    """Exceptions raised inside tasks' run() or requires() during build(), as (task, exception)."""
    seen: list[tuple[luigi.Task, BaseException]] = []

    def on_error(task, exc):
        seen.append((task, exc))

    events = (luigi.Event.FAILURE, luigi.Event.BROKEN_TASK)
    for event in events:
        luigi.Task.event_handler(event)(on_error)
    yield seen
    for event in events:
        luigi.Task._event_callbacks.get(luigi.Task, {}).get(event, set()).discard(on_error)


@pytest.fixture
def luigi_registry():
    """Forget cached task instances before and after the test."""
    luigi.task_register.Register.clear_instance_cache()
    yield
    luigi.task_register.Register.clear_instance_cache()


@pytest.fixture
def configure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, luigi_registry) -> Callable[..., Path]:
    """``configure(sections)`` writes a luigi.cfg under tmp_path, makes it the only
    config Luigi reads, and returns its path (for subprocesses: LUIGI_CONFIG_PATH)."""
    monkeypatch.chdir(tmp_path)
    parser = luigi.configuration.get_config()

    def apply(sections: dict[str, dict[str, object]]) -> Path:
        path = tmp_path / "luigi.cfg"
        lines = []
        for section, values in sections.items():
            lines.append(f"[{section}]")
            lines += [f"{k} = {v}" for k, v in values.items()]
            lines.append("")
        path.write_text("\n".join(lines))
        for s in parser.sections():
            parser.remove_section(s)
        parser.read([str(path)])
        monkeypatch.setenv("LUIGI_CONFIG_PATH", str(path))
        luigi.task_register.Register.clear_instance_cache()
        return path

    yield apply
    for s in parser.sections():
        parser.remove_section(s)
    luigi.task_register.Register.clear_instance_cache()


@pytest.fixture(scope="module")
def fashion(tmp_path_factory) -> tuple[np.ndarray, pd.DataFrame]:
    """The embedded Fashion-MNIST subset indexed once: (pixel store, train index)."""
    out = tmp_path_factory.mktemp("fashion") / "ds"
    summary = build_index(IndexSettings(source="embedded", dask_scheduler="synchronous"), out)
    assert summary["classes"] == 10
    index = read_index(out, ["image_id", "split", "label"])
    return open_store(out), index[index["split"] == "train"].sort_values("image_id")


@pytest.fixture
def tiny_imagenet(tmp_path: Path) -> Path:
    """A 3-class Tiny ImageNet layout (with grayscale and CMYK JPEGs)."""
    return make_tiny_imagenet(tmp_path / "tiny-imagenet-200", n_classes=3, train_per_class=12, val_per_class=4)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A 3-class ImageFolder tree of JPEGs and PNGs."""
    return make_image_folder(tmp_path / "folder", train_per_class=10, val_per_class=4)


@pytest.fixture
def fast_pipeline(configure, tmp_path: Path, tiny_imagenet: Path) -> Path:
    """The fast configuration on the Tiny ImageNet fixture; returns the config path."""
    return configure(fast_config(tmp_path, tiny_imagenet))


def build(tasks: list[luigi.Task], workers: int = 1) -> luigi.execution_summary.LuigiRunResult:
    """Run tasks in-process as the tests' single entry point into Luigi."""
    return luigi.build(tasks, local_scheduler=True, detailed_summary=True, workers=workers)


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate a server the tests started, killing it if it does not exit within 15 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
