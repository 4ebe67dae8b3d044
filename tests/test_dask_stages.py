"""``[dask] address`` for EmbedEpoch, ValidateEpoch and PixelBaseline: on a real
dask.distributed cluster they write what the in-process run writes (vectors bit for
bit on the CPU, metrics to the last digit), an embedding worker loads the network
once, and a worker killed mid-stage is retried or fails the stage without output.

One ``LocalCluster(n_workers=2, processes=True)`` serves the whole module, the
command-line test included (as ``--dask-address tcp://...``, a running cluster: a
worker's start, which imports torch, costs seconds). Its workers advertise a ``GPU``
resource (they have no GPU: they embed on the CPU), so shards sent with
``[EmbedEpoch] dask_resources = GPU=1`` take the path a GPU cluster takes. The tests
that kill a worker come last.
"""

from __future__ import annotations

import configparser
import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pytest
import torch
from distributed import Client, KilledWorker, get_task_stream

import tasks
from pipeline.audit.findings import audit_tables
from pipeline.audit.settings import AuditSettings
from pipeline.dask_cluster import dask_client, parse_resources
from pipeline.data.indexing import build_index
from pipeline.data.pixel_store import read_index
from pipeline.data.settings import IndexSettings
from pipeline.device import ComputeSettings
from pipeline.embedding import worker_model
from pipeline.embedding.embed import load_embeddings, read_manifest, write_shards
from pipeline.embedding.epoch import embed_epoch
from pipeline.embedding.settings import EmbedSettings
from pipeline.errors import ConfigError
from pipeline.evaluation.baseline import pixel_baseline
from pipeline.evaluation.epoch_metrics import validate_epoch
from pipeline.evaluation.settings import BaselineSettings, ValidationSettings
from pipeline.network import ModelSettings, build_model
from pipeline.paths import validation_files
from tests.datagen import make_image_folder
from tests.support import REPO, assert_succeeded, build, fast_config, luigi_cli, write_overrides

MODEL = ModelSettings(arch="resnet18", width=8, embedding_dim=8, stem="small-s2")
CPU = ComputeSettings(device="cpu", threads=1)
# 42 images in batches of 4, about 8 images a shard: 6 shards over the two workers.
EMBED = EmbedSettings(batch_size=4, dask_shard_images=7, dask_resources="GPU=1")
VALIDATION = ValidationSettings(k=5, train_queries=40, figure_queries=3, figure_k=4, triplets=50, seed=3)


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """The module's LocalCluster of two worker processes (``local:2``), each offering GPU=1."""
    with dask_client("local:2", resources={"GPU": 1}) as c:
        assert c is not None and len(c.scheduler_info()["workers"]) == 2
        yield c


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_image_folder(tmp_path_factory.mktemp("data") / "folder", train_per_class=10, val_per_class=4)
    out = tmp_path_factory.mktemp("ds") / "ds"
    build_index(IndexSettings(source="image-folder", root=str(root), stored_size=16, dask_scheduler="synchronous"),
                out)
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random network saved the way TrainEpoch saves one."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "_checkpoint.pt"
    torch.save({"model": build_model(MODEL).state_dict(), "model_settings": asdict(MODEL)}, path)
    return path


@pytest.fixture(scope="module")
def in_process_embeddings(dataset: Path, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "emb"
    embed_epoch(checkpoint, dataset, out, MODEL, EMBED, epoch=0, compute=CPU, what="the test network")
    return out


@pytest.fixture(scope="module")
def gallery_embeddings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Clustered synthetic vectors (with duplicate rows, so ties are broken too): 10 classes, 320 + 120."""
    rng = np.random.default_rng(1)
    labels = np.concatenate([rng.integers(0, 10, 320), rng.integers(0, 10, 120)])
    vectors = (rng.normal(size=(10, 8))[labels] * 2 + rng.normal(size=(440, 8))).astype(np.float32)
    vectors[5] = vectors[6]
    index = pd.DataFrame({"image_id": np.arange(440), "split": ["train"] * 320 + ["val"] * 120, "label": labels})
    out = tmp_path_factory.mktemp("gallery") / "emb"
    write_shards(out, index, vectors, epoch=1, rows_per_shard=100)
    return out


def assert_same_embeddings(a: Path, b: Path) -> None:
    """Same shard files, byte for byte, and the same manifest but for the seconds it took."""
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    for name in files:
        if name != "_manifest.json":
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
    manifests = [read_manifest(d) for d in (a, b)]
    for m in manifests:
        m.pop("seconds")
    assert manifests[0] == manifests[1]


def assert_same_validation(a: Path, b: Path) -> None:
    """Same metrics (to the last digit) but for seconds, and the same sidecars, byte for byte."""
    jsons = [json.loads(p.read_text()) for p in (a, b)]
    for j in jsons:
        j.pop("seconds")
    assert jsons[0] == jsons[1]
    for x, y in zip(validation_files(a)[1:], validation_files(b)[1:]):
        assert x.read_bytes() == y.read_bytes(), x.name


def tasks_run(stream: list[dict], name: str) -> list[dict]:
    return [t for t in stream if name in t["key"]]


def _die_on(module: str, function: str, marker: str | None) -> None:
    """Run inside each worker: the first call of ``module.function`` kills the worker process (only
    once, recorded by creating ``marker``, when it is a path; else at every call)."""
    import importlib

    target = importlib.import_module(module)
    original = getattr(target, function)
    original = getattr(original, "original", original)

    def dying(*args, **kwargs):
        if marker is None or not os.path.exists(marker):
            if marker is not None:
                Path(marker).touch()
            os._exit(1)  # a hard kill: no exception, no cleanup, like SIGKILL or the OOM killer
        return original(*args, **kwargs)

    dying.original = original
    setattr(target, function, dying)


def _restore(module: str, function: str) -> None:
    import importlib

    target = importlib.import_module(module)
    setattr(target, function, getattr(getattr(target, function), "original", getattr(target, function)))


# --------------------------------------------------------------------------- EmbedEpoch


def _count_network_loads() -> None:
    """In a worker: count the networks its embedding cache builds from a checkpoint."""
    original = getattr(worker_model.network_from_checkpoint, "original", worker_model.network_from_checkpoint)

    def counting(*args, **kwargs):
        counting.calls += 1
        return original(*args, **kwargs)

    counting.calls, counting.original = 0, original
    worker_model.network_from_checkpoint = counting


def _network_loads() -> int:
    return worker_model.network_from_checkpoint.calls


def test_embedding_on_the_cluster_is_identical_and_loads_the_network_once_per_worker(
        client: Client, dataset: Path, checkpoint: Path, in_process_embeddings: Path, tmp_path: Path) -> None:
    client.run(_count_network_loads)
    before = client.run(_network_loads)
    with get_task_stream(client) as stream:
        embed_epoch(checkpoint, dataset, tmp_path / "a", MODEL, EMBED, epoch=0, compute=CPU, what="the test network",
                    client=client)
    assert_same_embeddings(in_process_embeddings, tmp_path / "a")
    shards = tasks_run(stream.data, "embed_shard")
    assert len(shards) == 6  # 42 images, 8 a shard (7 rounded up to whole batches of 4)
    used = {t["worker"] for t in shards}
    loaded = {w: n - before[w] for w, n in client.run(_network_loads).items()}
    assert loaded == {w: int(w in used) for w in loaded}  # once per worker that embedded, not once per shard

    # Another run with the same checkpoint loads nothing: the workers kept the network.
    embed_epoch(checkpoint, dataset, tmp_path / "b", MODEL, EMBED, epoch=0, compute=CPU, what="the test network",
                client=client)
    assert_same_embeddings(in_process_embeddings, tmp_path / "b")
    assert {w: n - before[w] for w, n in client.run(_network_loads).items()} == loaded


def test_resources_no_worker_offers_are_refused_naming_the_setting(client: Client, dataset: Path, checkpoint: Path,
                                                                   tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[EmbedEpoch\] dask_resources = TPU=1, but no worker .* "
                                          r"`dask worker ADDRESS --resources TPU=1`"):
        embed_epoch(checkpoint, dataset, tmp_path / "out", MODEL, replace(EMBED, dask_resources="TPU=1"), epoch=0,
                    compute=CPU, what="the test network", client=client)
    assert not (tmp_path / "out").exists()
    assert parse_resources("GPU=1, SSD=0.5", "x") == {"GPU": 1.0, "SSD": 0.5}
    for bad in ("GPU", "GPU=0", "GPU=one", "=1"):
        with pytest.raises(ConfigError, match=r"\[EmbedEpoch\] dask_resources = .*NAME=AMOUNT"):
            replace(EMBED, dask_resources=bad).resources()


# --------------------------------------------------------------------------- ValidateEpoch, PixelBaseline


@pytest.mark.parametrize("settings", [VALIDATION, replace(VALIDATION, index="ivf", nlist=6, nprobe=1,
                                                          recall_queries=50)], ids=["flat", "ivf"])
def test_validation_on_the_cluster_is_identical(client: Client, gallery_embeddings: Path, tmp_path: Path,
                                                settings: ValidationSettings) -> None:
    recorded = {**settings.recorded(), "seed": settings.seed}
    here = validate_epoch(gallery_embeddings, tmp_path / "here" / "epoch-001.json", settings, epoch=1,
                          recorded=recorded)
    with get_task_stream(client) as stream:
        validate_epoch(gallery_embeddings, tmp_path / "there" / "epoch-001.json", settings, epoch=1,
                       recorded=recorded, client=client)
    assert_same_validation(tmp_path / "here" / "epoch-001.json", tmp_path / "there" / "epoch-001.json")
    # Several blocks per retrieval ran on the workers; in-process, each retrieval was one block.
    blocks = tasks_run(stream.data, "retrieve_block")
    assert len(blocks) == 2 * 2 * 2  # (validation + training sample) x 2 workers x 2 blocks each
    assert {t["worker"] for t in blocks} == set(client.scheduler_info()["workers"])
    assert ("ivf_recall_at_5_val" in here) == (settings.index == "ivf")


def test_audit_on_the_cluster_is_identical(client: Client, gallery_embeddings: Path) -> None:
    train = load_embeddings(gallery_embeddings, "train")
    given = train.labels.copy()
    given[::9] = (given[::9] + 1) % 10
    epochs = [train.vectors, train.vectors[::-1].copy()]  # two pooled "epochs" whose neighbours differ
    here = audit_tables(epochs, train.image_ids, given, AuditSettings(), true_labels=train.labels)
    with get_task_stream(client) as stream:
        there = audit_tables(epochs, train.image_ids, given, AuditSettings(), true_labels=train.labels,
                             client=client)
    pd.testing.assert_frame_equal(here[0], there[0])
    pd.testing.assert_frame_equal(here[1], there[1])
    assert here[2] == there[2] and here[2]["suspects"] > 0
    blocks = tasks_run(stream.data, "_vote_shared_block")
    assert len(blocks) == 2 * 2 and {t["worker"] for t in blocks} == set(client.scheduler_info()["workers"])


def test_pixel_baseline_on_the_cluster_is_identical(client: Client, dataset: Path, tmp_path: Path) -> None:
    settings = ValidationSettings(k=5, seed=0)
    here = pixel_baseline(dataset, tmp_path / "here.json", BaselineSettings(max_size=8), settings)
    there = pixel_baseline(dataset, tmp_path / "there.json", BaselineSettings(max_size=8), settings, client)
    for m in (here, there):
        m.pop("seconds")
    assert here == there and 0 < here["precision_at_5_val"] <= 1


# --------------------------------------------------------------------------- through the command


def with_shipped_config(cfg: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    """The shipped luigi.cfg with ``cfg`` on top: what the command reads, for the in-process reference."""
    parser = configparser.ConfigParser()
    parser.read(REPO / "luigi.cfg")
    merged: dict[str, dict[str, object]] = {s: dict(parser[s]) for s in parser.sections()}
    for section, values in cfg.items():
        merged.setdefault(section, {}).update(values)
    return merged


def test_validate_command_on_a_running_cluster_matches_in_process(client: Client, configure, tmp_path: Path) -> None:
    """``luigi --module tasks ValidateEpoch --dask-address tcp://...`` (with an IVF index), on the module's
    running cluster: EmbedEpoch and ValidateEpoch run on its workers and write what the in-process tasks
    write. (``local:N`` starts the same kind of cluster per task: tests/test_dask_cluster.py runs it.)"""
    root = make_image_folder(tmp_path / "folder", train_per_class=10, val_per_class=4)
    cfg = fast_config(tmp_path, root, source="image-folder")
    cfg["ValidateEpoch"].update(k=5, index="ivf", nlist=4, nprobe=1, recall_queries=6)
    cfg["EmbedEpoch"].update(batch_size=4, dask_shard_images=8)
    configure(with_shipped_config(cfg))
    result = build([tasks.ValidateEpoch(experiment="here", epoch=0), tasks.TrainEpoch(experiment="there", epoch=0)])
    assert_succeeded(result)

    address = client.scheduler.address
    with get_task_stream(client) as stream:
        outcome = luigi_cli(["ValidateEpoch", "--epoch", "0", "--experiment", "there", "--dask-address", address],
                            write_overrides(tmp_path, cfg))
    assert outcome.code == 0, outcome.output[-4000:]
    assert "embedded 42 images for epoch 0" in outcome.output and f"on the dask cluster {address}" in outcome.output
    assert f"searched on the dask cluster {address}" in outcome.output
    assert len(tasks_run(stream.data, "embed_shard")) == 6 and tasks_run(stream.data, "retrieve_block")
    exp = {name: tmp_path / "artifacts" / name for name in ("here", "there")}
    assert_same_embeddings(*(e / "embeddings" / "epoch-000" for e in exp.values()))
    assert_same_validation(*(e / "metrics" / "epoch-000.json" for e in exp.values()))
    metrics = json.loads((exp["there"] / "metrics" / "epoch-000.json").read_text())
    assert metrics["settings"]["index"] == "ivf" and 0 < metrics["ivf_recall_at_5_val"] <= 1
    assert len(read_index(tmp_path / "artifacts" / "datasets" / "image-folder-16px")) == 42


# --------------------------------------------------------------------------- a worker killed mid-stage


def test_embedding_worker_killed_mid_shard_is_retried(client: Client, dataset: Path, checkpoint: Path,
                                                      in_process_embeddings: Path, tmp_path: Path) -> None:
    marker = tmp_path / "died"
    client.run(_die_on, "pipeline.embedding.sharded", "embed_images", str(marker))
    try:
        embed_epoch(checkpoint, dataset, tmp_path / "out", MODEL, EMBED, epoch=0, compute=CPU,
                    what="the test network", client=client)
    finally:
        client.run(_restore, "pipeline.embedding.sharded", "embed_images")
    assert marker.exists()  # a worker did die, and its shard was embedded again elsewhere
    assert_same_embeddings(in_process_embeddings, tmp_path / "out")
    client.wait_for_workers(2, timeout=60)


def _fail_on(module: str, function: str) -> None:
    """Run inside a worker: ``module.function`` raises, as a bug or a bad input in one block would."""
    import importlib

    target = importlib.import_module(module)
    original = getattr(target, function)

    def failing(*args, **kwargs):
        raise RuntimeError("a block failed on the worker")

    failing.original = getattr(original, "original", original)
    setattr(target, function, failing)


@pytest.mark.parametrize("how", ["raises", pytest.param("dies", marks=pytest.mark.slow)])
def test_validation_block_failing_for_good_leaves_no_output(client: Client, gallery_embeddings: Path,
                                                            tmp_path: Path, how: str) -> None:
    """A block that fails on a worker (an exception, or the worker killed with no retries left) fails
    the stage before anything is written: ValidateEpoch writes its sidecars and JSON straight into
    metrics/, so the whole evaluation must finish before the first file appears."""
    scheduler = client.cluster.scheduler  # in this process: LocalCluster runs its scheduler here
    allowed = scheduler.allowed_failures
    scheduler.allowed_failures = 0  # give up at the first death instead of after 3 restarts
    doomed = sorted(client.scheduler_info()["workers"])[:1]  # one worker fails every block it takes
    if how == "dies":
        client.run(_die_on, "pipeline.evaluation.bounded", "score_block", None, workers=doomed)
    else:
        client.run(_fail_on, "pipeline.evaluation.bounded", "score_block", workers=doomed)
    out = tmp_path / "metrics"
    out.mkdir()
    try:
        expected = KilledWorker if how == "dies" else RuntimeError
        with pytest.raises(expected):
            validate_epoch(gallery_embeddings, out / "epoch-001.json", VALIDATION, epoch=1, recorded={},
                           client=client)
    finally:
        scheduler.allowed_failures = allowed
        if how == "dies":
            client.wait_for_workers(2, timeout=60)  # the nanny restarted it; the module's cluster closes cleanly
        client.run(_restore, "pipeline.evaluation.bounded", "score_block")
    assert list(out.iterdir()) == []
