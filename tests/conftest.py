"""Shared fixtures: a clean Luigi registry and config per test, tiny datasets. Shared
helpers that are not fixtures are in :mod:`tests.support`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import luigi
import luigi.configuration
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.data.indexing import build_index
from pipeline.data.pixel_store import open_store, read_index
from pipeline.data.settings import IndexSettings
from tests.datagen import make_image_folder, make_tiny_imagenet
from tests.support import fast_config, write_overrides

os.environ.setdefault("DASK_SCHEDULER", "synchronous")




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
        path = write_overrides(tmp_path, sections, name="luigi.cfg")
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
