"""``[dask] address``: IndexDataset decoding and TripletList class blocks on a real
dask.distributed cluster give the in-process results, byte for byte.

One ``LocalCluster(n_workers=2, processes=True)`` (``local:2``) is shared by the
in-process tests of this module; the command-line tests start their own, as a
user's run does. A worker is killed mid-stage through ``client.run``, which
patches the decoder inside the worker processes only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pytest
from distributed import Client, KilledWorker, get_task_stream

import pipeline.data.indexing
import tasks
from pipeline.dask_cluster import dask_client, parse_address
from pipeline.data.indexing import build_index
from pipeline.data.settings import IndexSettings
from pipeline.errors import ConfigError
from pipeline.sampling import ClassMembers, ListSettings, SamplingContext, get_strategy, sample_triplets
from pipeline.storage import atomic_path
from tasks.config_keys import check_config_keys
from tests.datagen import corrupt_file, make_image_folder
from tests.support import assert_succeeded, build, fast_config, luigi_cli, shipped_retcode, write_overrides

SIZE = 16
UNREACHABLE = "tcp://127.0.0.1:1"  # port 1: nothing listens, the connection is refused at once


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """The module's LocalCluster of two worker processes, through ``[dask] address = local:2``."""
    with dask_client("local:2") as c:
        assert c is not None and len(c.scheduler_info()["workers"]) == 2
        yield c


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image folder with one truncated file, so skipping and store compaction run too."""
    root = make_image_folder(tmp_path_factory.mktemp("data") / "folder", train_per_class=10, val_per_class=4)
    corrupt_file(root / "train" / "dog" / "dog_3.png")
    return root


@pytest.fixture(scope="module")
def in_process_index(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the folder indexed with the synchronous in-process scheduler."""
    out = tmp_path_factory.mktemp("ref") / "ds"
    build_index(_settings(folder), out)
    return out


def _settings(folder: Path, **changes: object) -> IndexSettings:
    return IndexSettings(source="image-folder", root=str(folder), stored_size=SIZE, on_bad_image="skip",
                         dask_scheduler="synchronous", **changes)


def assert_same_index(a: Path, b: Path) -> None:
    """Same pixels (byte for byte), index and skipped list."""
    assert (a / "pixels.npy").read_bytes() == (b / "pixels.npy").read_bytes()
    for name in ("index.parquet", "skipped.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(a / name), pd.read_parquet(b / name))


def _die_on(path_suffix: str, marker: str | None) -> None:
    """Run inside each worker: decoding the file ending in ``path_suffix`` kills the worker
    process, the first time only when ``marker`` is a path (it records the death), else always."""
    decode = pipeline.data.indexing.decode_image
    original = getattr(decode, "original", decode)

    def dying(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int], str]:  # decode_image's signature
        if str(path).endswith(path_suffix) and (marker is None or not os.path.exists(marker)):
            if marker is not None:
                Path(marker).touch()
            os._exit(1)  # a hard kill: no exception, no cleanup, like SIGKILL or the OOM killer
        return original(path, size)

    dying.original = original
    pipeline.data.indexing.decode_image = dying


def _restore_decoder() -> None:
    decode = pipeline.data.indexing.decode_image
    pipeline.data.indexing.decode_image = getattr(decode, "original", decode)


# --------------------------------------------------------------------------- the address


@pytest.mark.parametrize("address, kind, workers", [("", "in-process", 0), ("  ", "in-process", 0),
                                                    ("local:2", "local", 2), ("tcp://host:8786", "remote", 0),
                                                    ("tls://10.0.0.1:8786", "remote", 0)])
def test_address_forms(address: str, kind: str, workers: int) -> None:
    target = parse_address(address)
    assert (target.kind, target.workers) == (kind, workers)


@pytest.mark.parametrize("address", ["local:0", "local:two", "local", "tcp://", "my cluster"])
def test_malformed_address_is_refused_naming_the_setting(address: str) -> None:
    with pytest.raises(ConfigError, match=r"\[dask\] address = .*local:N"):
        parse_address(address)


def test_in_process_yields_no_client() -> None:
    with dask_client("") as c:
        assert c is None


def test_unreachable_address_fails_naming_the_setting() -> None:
    expected = r"\[dask\] address = tcp://127\.0\.0\.1:1: no dask scheduler.*dask worker"
    with pytest.raises(ConfigError, match=expected), dask_client(UNREACHABLE, timeout=1):
        pass


def test_dask_section_keys_are_settings(configure) -> None:
    configure({"dask": {"address": "local:2"}})
    check_config_keys()
    configure({"dask": {"adress": "local:2"}})
    with pytest.raises(ConfigError, match=r"\[dask\] adress: not a setting of \[dask\] \(settings: address\)"):
        check_config_keys()


# --------------------------------------------------------------------------- same results on the cluster


def test_index_on_the_cluster_is_identical(client: Client, folder: Path, in_process_index: Path,
                                           tmp_path: Path) -> None:
    out = tmp_path / "ds"
    summary = build_index(_settings(folder, partition_size=4), out, client)  # several partitions per worker
    assert summary["skipped"] == 1
    assert_same_index(in_process_index, out)


@pytest.mark.parametrize("strategy", ["uniform", "semihard", "mixed", "batched"])
def test_triplets_on_the_cluster_are_identical(client: Client, strategy: str) -> None:
    labels = np.repeat(np.arange(6), 15)
    rng = np.random.default_rng(3)
    ctx = SamplingContext(classes=ClassMembers.from_labels(labels), epoch=2, seed=5, margin=1.0,
                          embeddings=rng.normal(size=(labels.size, 8)).astype(np.float32))
    ids = np.arange(labels.size) * 2 + 7  # ids differ from positions, as in a real index
    settings = ListSettings(triplets_per_query=2, n_blocks=4, dask_scheduler="synchronous")
    options = ({"batch_classes": 3, "batch_seeds": 2, "image_passes": 1} if strategy == "batched" else
               {"mined_strategy": "semihard"})
    here = sample_triplets(ctx, get_strategy(strategy, **options), ids, settings).to_pandas()
    with get_task_stream(client) as stream:
        there = sample_triplets(ctx, get_strategy(strategy, **options), ids, settings, client).to_pandas()
    assert len(here) > 0
    pd.testing.assert_frame_equal(here, there)  # NaN distances (uniform rows) compare equal here
    # Class blocks ran on the workers; a batched list is sampled whole, in this process.
    assert sum("_run_block" in t["key"] for t in stream.data) == (0 if strategy == "batched" else 4)  # n_blocks


# --------------------------------------------------------------------------- a worker killed mid-stage


def test_killed_worker_is_retried_and_the_index_is_identical(client: Client, folder: Path, in_process_index: Path,
                                                             tmp_path: Path) -> None:
    marker = tmp_path / "died"
    client.run(_die_on, "cat_5.png", str(marker))
    try:
        out = tmp_path / "ds"
        build_index(_settings(folder, partition_size=4), out, client)
    finally:
        client.run(_restore_decoder)
    assert marker.exists()  # a worker did die, and the stage went on without it
    assert_same_index(in_process_index, out)
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it, for the tests that follow


def test_worker_killed_for_good_leaves_no_output(client: Client, folder: Path, tmp_path: Path) -> None:
    scheduler = client.cluster.scheduler  # in this process: LocalCluster runs its scheduler here
    allowed = scheduler.allowed_failures
    scheduler.allowed_failures = 0  # give up at the first death instead of after 3 restarts
    client.run(_die_on, "frog_2.jpg", None)
    out = tmp_path / "ds"
    try:
        with pytest.raises(KilledWorker), atomic_path(out, is_dir=True) as tmp:  # as IndexDataset writes
            build_index(_settings(folder), tmp, client)
    finally:
        scheduler.allowed_failures = allowed
        client.run(_restore_decoder)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    client.wait_for_workers(2, timeout=60)


# --------------------------------------------------------------------------- through the tasks


def test_tasks_on_a_running_scheduler_match_in_process(client: Client, folder: Path, tmp_path: Path,
                                                       configure) -> None:
    """``[dask] address = tcp://...``: IndexDataset and a plain TripletList on an existing
    scheduler (the module's cluster) write what the in-process run writes."""
    lists = []
    for name, address in (("here", ""), ("there", client.scheduler.address)):
        cfg = fast_config(tmp_path / name, folder, source="image-folder")
        cfg["dataset"].update(on_bad_image="skip")
        cfg["TripletList"].update(strategy="uniform", triplets_per_query=2, n_blocks=2)
        cfg["dask"] = {"address": address}
        configure(cfg)
        task = tasks.TripletList(epoch=1)
        result = build([task])
        assert_succeeded(result)
        lists.append(pd.read_parquet(task.output().path))
    assert len(lists[0]) == 2 * 29  # every training image but the truncated one, twice
    pd.testing.assert_frame_equal(lists[0], lists[1])
    assert_same_index(*(tmp_path / name / "artifacts" / "datasets" / f"image-folder-{SIZE}px"
                        for name in ("here", "there")))


# --------------------------------------------------------------------------- through the command


def test_index_dataset_command_on_local_cluster(folder: Path, in_process_index: Path, tmp_path: Path) -> None:
    cfg = fast_config(tmp_path, folder, source="image-folder")
    cfg["dataset"].update(stored_size=SIZE, on_bad_image="skip")
    outcome = luigi_cli(["IndexDataset", "--dask-address", "local:2"], write_overrides(tmp_path, cfg))
    assert outcome.code == 0, outcome.output
    assert_same_index(in_process_index, tmp_path / "artifacts" / "datasets" / f"image-folder-{SIZE}px")


def test_unreachable_address_ends_the_command_naming_it(folder: Path, tmp_path: Path) -> None:
    cfg = fast_config(tmp_path, folder, source="image-folder")
    cfg["dask"] = {"address": UNREACHABLE}
    outcome = luigi_cli(["IndexDataset"], write_overrides(tmp_path, cfg))
    assert outcome.code == shipped_retcode("task_failed"), outcome.output
    assert f"[dask] address = {UNREACHABLE}" in outcome.output
    assert not (tmp_path / "artifacts" / "datasets").exists() or \
        not any((tmp_path / "artifacts" / "datasets").iterdir())
