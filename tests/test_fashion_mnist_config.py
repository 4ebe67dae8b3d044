"""configs/fashion-mnist.cfg, layered over the shipped luigi.cfg, is a configuration
the real command accepts: every key is a declared setting (an unknown one ends the
command with exit 35 before anything runs) and its [dataset] section selects the
idx files of Fashion-MNIST. The full-size run itself takes about 20-30 minutes
(README "Full Fashion-MNIST"); here the dataset root points at four tiny idx files.
"""

from __future__ import annotations

import configparser
import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipeline.data.sources.fashion_mnist import FILES

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONFIG = REPO / "configs" / "fashion-mnist.cfg"


def write_idx(path: Path, array: np.ndarray) -> None:
    """A gzipped uint8 idx file, as the Debian package ships them."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    path.write_bytes(gzip.compress(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()))


def tiny_fashion_mnist(root: Path, per_class: dict[str, int]) -> Path:
    """Idx files of random 28x28 images, ``per_class[split]`` of each of the 10 classes."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, img_stem, lbl_stem in FILES:
        labels = np.repeat(np.arange(10), per_class[split])
        write_idx(root / f"{img_stem}.gz", rng.integers(0, 256, (len(labels), 28, 28)))
        write_idx(root / f"{lbl_stem}.gz", labels)
    return root


def layered_config(tmp_path: Path, dataset_root: Path, extra: dict[str, dict[str, str]] | None = None) -> Path:
    """configs/fashion-mnist.cfg with the dataset and artifacts roots moved to ``tmp_path`` (plus ``extra``)."""
    merged = configparser.ConfigParser()
    merged.read(CONFIG)
    merged["dataset"]["root"] = str(dataset_root)
    merged["artifacts"] = {"root": str(tmp_path / "artifacts")}
    for section, values in (extra or {}).items():
        merged[section].update(values)
    path = tmp_path / "fashion-mnist-test.cfg"
    with open(path, "w") as out:
        merged.write(out)
    return path


def luigi_task(config: Path, task: str) -> subprocess.CompletedProcess:
    """The real command, from the repository root so the shipped luigi.cfg lies under ``config``."""
    env = dict(os.environ, LUIGI_CONFIG_PATH=str(config), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([str(BIN / "luigi"), "--module", "tasks", task], check=False, cwd=REPO, env=env,
                          timeout=120, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")


def test_fashion_mnist_config_is_accepted_and_reads_the_idx_files(tmp_path):
    data = tiny_fashion_mnist(tmp_path / "fashion-mnist", {"train": 3, "val": 1})
    proc = luigi_task(layered_config(tmp_path, data), "IndexDataset")
    assert proc.returncode == 0, proc.stdout[-4000:]
    index = pq.read_table(tmp_path / "artifacts" / "datasets" / "fashion-mnist-28px" / "index.parquet").to_pandas()
    assert index["split"].value_counts().to_dict() == {"train": 30, "val": 10}
    assert sorted(index["label"].unique().tolist()) == list(range(10))


def test_a_misspelled_key_in_the_fashion_mnist_config_is_refused(tmp_path):
    """The key check is live under this layering: RunAll with a typo is refused while
    scheduling (exit 35), naming the key, before anything runs."""
    data = tiny_fashion_mnist(tmp_path / "fashion-mnist", {"train": 3, "val": 1})
    proc = luigi_task(layered_config(tmp_path, data, {"TrainEpoch": {"lr_stepp": "3"}}), "RunAll")
    assert proc.returncode == 35, proc.stdout[-4000:]
    assert "[TrainEpoch] lr_stepp" in proc.stdout
    assert not (tmp_path / "artifacts" / "datasets" / "fashion-mnist-28px").exists()
