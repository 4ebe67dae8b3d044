"""Shared by the search page's tests (a helper module, not a test file): a tiny
trained experiment with two searchable epochs, and the real
``python -m pipeline.serve`` command running over it.

The experiment is built once per test session in a subprocess (so Luigi's
global configuration in the test process stays untouched): epochs 1 and 2 are
trained, embedded and indexed (``SearchIndex``), and epoch 2 is validated,
which writes its per-query file; epoch 1 is left without one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from tests.datagen import make_tiny_imagenet
from tests.support import fast_config, stop_process

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "test"
BUILD_TIMEOUT = 300  # seconds; the build takes about 20 on two cores
START_TIMEOUT = 90  # seconds for the server to print its URL
MAX_UPLOAD_MB = 0.05  # small, so a test can send an oversized upload cheaply

_BUILD = textwrap.dedent("""
    import luigi, tasks
    # tasks.SearchIndex once the package exports it; the module meanwhile.
    SearchIndex = getattr(tasks, "SearchIndex", None)
    if SearchIndex is None:
        from tasks.search_index import SearchIndex
    ok = luigi.build([SearchIndex(epoch=1), SearchIndex(epoch=2), tasks.ValidateEpoch(epoch=2)],
                     local_scheduler=True, workers=1)
    raise SystemExit(0 if ok else 1)
""")


@dataclass(frozen=True)
class Experiment:
    root: Path  # the artifacts root
    dataset_root: Path  # the Tiny ImageNet tree the images came from
    items: pd.DataFrame  # epoch 2's search items (image_id, split, label, class_name, path)


@dataclass(frozen=True)
class Server:
    url: str  # http://127.0.0.1:PORT/ with the trailing slash
    experiment: Experiment


def env() -> dict[str, str]:
    out = dict(os.environ)
    out.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return out


def write_config(path: Path, sections: dict[str, dict[str, object]]) -> Path:
    lines = []
    for section, values in sections.items():
        lines += [f"[{section}]", *(f"{k} = {v}" for k, v in values.items()), ""]
    path.write_text("\n".join(lines))
    return path


@pytest.fixture(scope="session")
def searchable(tmp_path_factory: pytest.TempPathFactory) -> Experiment:
    """Two trained, embedded and indexed epochs of experiment ``test``; epoch 2 validated."""
    base = tmp_path_factory.mktemp("serve")
    dataset_root = make_tiny_imagenet(base / "tiny-imagenet-200", n_classes=3, train_per_class=12, val_per_class=4)
    cfg = fast_config(base, dataset_root)
    # The course loss and no weight decay (the defaults this fixture was written for): a small,
    # steady network whose re-decoded upload lands within 1e-3 of its stored image.
    cfg["loss"] = {"reduce": "mean", "in_batch": "listed"}
    cfg["TrainEpoch"].update(weight_decay=0.0, lr_step=0, lr_gamma=0.1)
    config = write_config(base / "luigi.cfg", cfg)
    proc = subprocess.run([sys.executable, "-c", _BUILD], cwd=base, env={**env(), "LUIGI_CONFIG_PATH": str(config)},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=BUILD_TIMEOUT, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:]
    root = base / "artifacts"
    items = pd.read_parquet(root / EXPERIMENT / "search" / "epoch-002" / "items.parquet")
    return Experiment(root=root, dataset_root=dataset_root, items=items)


def serve_command(root: Path, *args: str, experiment: str = EXPERIMENT) -> list[str]:
    return [sys.executable, "-m", "pipeline.serve", "--artifacts", str(root), "--experiment", experiment, *args]


@pytest.fixture(scope="session")
def server(searchable: Experiment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``python -m pipeline.serve --port 0`` over :func:`searchable`, stopped (always) after the session."""
    logs = tmp_path_factory.mktemp("serve-logs")
    # Files, not pipes: the request log on stderr would fill a pipe nobody reads and stall the server.
    with open(logs / "stdout", "w") as out, open(logs / "stderr", "w") as err:
        proc = subprocess.Popen(serve_command(searchable.root, "--port", "0", "--max-upload-mb", str(MAX_UPLOAD_MB)),
                                cwd=REPO, env=env(), stdout=out, stderr=err)
    try:
        url = wait_for_url(proc, logs / "stdout", logs / "stderr")
        yield Server(url=url, experiment=searchable)
    finally:
        stop_process(proc)


def wait_for_url(proc: subprocess.Popen, stdout: Path, stderr: Path) -> str:
    """The URL the server prints once it listens; fails with its output if it exits or stays silent."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        found = re.search(r"^serving (http://127\.0\.0\.1:\d+/)$", stdout.read_text(), re.MULTILINE)
        if found:
            return found.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"the server did not print its URL (exit code {proc.poll()}):\n"
                         f"{stdout.read_text()}\n{stderr.read_text()[-4000:]}")


def training_file(experiment: Experiment, mode: str) -> tuple[int, Path]:
    """(image id, source file) of the first indexed training image whose file is stored in ``mode``."""
    from PIL import Image

    for row in experiment.items[experiment.items["split"] == "train"].itertuples():
        path = experiment.dataset_root / row.path
        with Image.open(path) as img:
            if img.mode == mode:
                return int(row.image_id), path
    raise AssertionError(f"the test dataset has no {mode} training image")
