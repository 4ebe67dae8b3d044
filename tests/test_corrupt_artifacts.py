"""Damaged artifacts: a truncated, overwritten or inconsistent file gives a
CorruptArtifactError naming the file, the folder to delete and the task that
rebuilds it -- never a traceback from deep inside pyarrow, numpy or json.

Artifacts are built with the library functions under a real artifacts layout
(``<root>/datasets/<key>/``, ``<root>/<experiment>/embeddings/epoch=NNN/``, ...),
then damaged the way a full disk, a killed copy or a stray write would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from pipeline import paths, storage
from pipeline.checkpoint import load_checkpoint, save_checkpoint
from pipeline.data.indexing import build_index
from pipeline.data.pixel_store import INDEX_FILE, STORE_FILE, create_store, open_store, read_index
from pipeline.data.settings import IndexSettings
from pipeline.embedding.embed import MANIFEST, load_embeddings, read_manifest, write_shards
from pipeline.errors import CorruptArtifactError, PipelineError
from pipeline.sampling import ClassMembers, ListSettings, SamplingContext, get_strategy, sample_triplets
from pipeline.sampling.list_files import PART, read_list, read_triplet_meta, read_triplets, write_triplet_list
from tests.datagen import corrupt_file

EXPERIMENT = "test"


# --------------------------------------------------------------------------- building real artifacts


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


@pytest.fixture
def dataset(root: Path, image_folder: Path) -> Path:
    """``<root>/datasets/folder-16px``: 3 classes x (10 train + 4 val) images, indexed for real."""
    ds = paths.dataset_dir(root, "folder-16px")
    build_index(IndexSettings(source="image-folder", root=str(image_folder), stored_size=16, dask_scheduler="synchronous"),
                ds)
    return ds


@pytest.fixture
def embeddings(root: Path) -> Path:
    """``<root>/test/embeddings/epoch-003``: 30 vectors of 4 floats in four shards."""
    emb = paths.embeddings_dir(root, EXPERIMENT, 3)
    n = 30
    index = pd.DataFrame({"image_id": np.arange(n), "split": ["train"] * 20 + ["val"] * 10,
                          "label": np.arange(n) % 3})
    vectors = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
    write_shards(emb, index, vectors, epoch=3, rows_per_shard=8)
    return emb


@pytest.fixture
def triplets(root: Path) -> Path:
    """``<root>/test/triplets/epoch-002``: a uniform triplet list over 24 images."""
    out = paths.triplets_dir(root, EXPERIMENT, 2)
    labels = np.arange(24) % 3
    ctx = SamplingContext(ClassMembers.from_labels(labels), epoch=2, seed=0)
    table = sample_triplets(ctx, get_strategy("uniform"), np.arange(24),
                            ListSettings(triplets_per_query=1, n_blocks=2, dask_scheduler="synchronous"))
    write_triplet_list(out, table, {"strategy": "uniform", "seconds": 0.1})
    return out


# --------------------------------------------------------------------------- damaging them


def truncate_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def overwrite(path: Path, start: int, length: int, byte: bytes = b"\xa5") -> None:
    """Overwrite ``length`` bytes at ``start`` in place (the size stays the same)."""
    data = bytearray(path.read_bytes())
    data[start : start + length] = byte * length
    path.write_bytes(bytes(data))


def overwrite_column(path: Path, column: str) -> None:
    """Overwrite bytes in the middle of ``column``'s data in the Parquet file ``path``."""
    meta = pq.read_metadata(path).row_group(0)
    (chunk,) = [c for c in map(meta.column, range(meta.num_columns))
                if c.path_in_schema == column or c.path_in_schema.startswith(column + ".")]
    overwrite(path, _chunk_start(chunk) + chunk.total_compressed_size // 2, min(16, chunk.total_compressed_size // 4))


def _chunk_start(chunk) -> int:
    # A dictionary page, where there is one, comes first (pyarrow dictionary-encodes even floats).
    return chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset


def overwrite_footer(path: Path) -> None:
    """Garble the Parquet footer (the metadata just before the trailing length and magic)."""
    overwrite(path, path.stat().st_size - 8 - 64, 64, b"\xff")


def expect_corrupt(fn, damaged: Path, delete: Path, rerun: str) -> CorruptArtifactError:
    """Call ``fn``; it must raise a CorruptArtifactError naming ``damaged``, ``delete`` and ``rerun``."""
    with pytest.raises(CorruptArtifactError) as info:
        fn()
    message = str(info.value)
    assert str(damaged) in message, message
    assert f"delete {delete}" in message, message
    assert rerun in message, message
    assert "\n" not in message
    assert isinstance(info.value, PipelineError)
    return info.value


# --------------------------------------------------------------------------- the dataset: index and pixel store


def test_intact_dataset_reads(dataset):
    store, index = open_store(dataset), read_index(dataset)
    assert store.shape == (42, 16, 16, 3) and len(index) == 42


@pytest.mark.parametrize("damage", [truncate_half, overwrite_footer, lambda p: corrupt_file(p, "zero"),
                                    lambda p: corrupt_file(p, "garbage")],
                         ids=["truncated", "footer-overwritten", "empty", "garbage"])
def test_damaged_index(dataset, damage):
    damage(dataset / INDEX_FILE)
    err = expect_corrupt(lambda: read_index(dataset), dataset / INDEX_FILE, dataset, "IndexDataset")
    assert err.__cause__ is not None  # the pyarrow error stays visible with --debug
    # The store is checked against the index, so opening it names the index too.
    expect_corrupt(lambda: open_store(dataset), dataset / INDEX_FILE, dataset, "IndexDataset")


def test_index_without_a_requested_column(dataset):
    pd.read_parquet(dataset / INDEX_FILE).drop(columns=["label"]).to_parquet(dataset / INDEX_FILE, index=False)
    expect_corrupt(lambda: read_index(dataset, ["image_id", "label"]), dataset / INDEX_FILE, dataset, "IndexDataset")


@pytest.mark.parametrize("damage", [
    truncate_half,
    lambda p: p.write_bytes(p.read_bytes()[:60]),  # cut inside the header
    lambda p: corrupt_file(p, "zero"),
    lambda p: corrupt_file(p, "garbage"),
    lambda p: overwrite(p, 0, 16),  # magic string gone
    lambda p: overwrite(p, 20, 40, b"x"),  # header dictionary garbled
    lambda p: p.write_bytes(p.read_bytes() + bytes(16 * 16 * 3)),  # one image more than the header says
], ids=["truncated", "header-cut", "empty", "garbage", "magic-overwritten", "header-overwritten", "too-long"])
def test_damaged_pixel_store(dataset, damage):
    damage(dataset / STORE_FILE)
    expect_corrupt(lambda: open_store(dataset), dataset / STORE_FILE, dataset, "IndexDataset")


def test_pixel_store_with_fewer_images_than_the_index(dataset):
    # A valid .npy, but not the one this index describes (41 images for 42 rows).
    (dataset / STORE_FILE).unlink()
    create_store(dataset / STORE_FILE, 41, 16).flush()
    err = expect_corrupt(lambda: open_store(dataset), dataset / STORE_FILE, dataset, "IndexDataset")
    assert "41" in str(err) and "42" in str(err)


def test_pixel_store_of_the_wrong_shape(dataset):
    (dataset / STORE_FILE).unlink()
    np.save(dataset / STORE_FILE, np.zeros((42, 16, 16), np.uint8))
    expect_corrupt(lambda: open_store(dataset), dataset / STORE_FILE, dataset, "IndexDataset")


# --------------------------------------------------------------------------- embedding shards and manifest

EMBED = "EmbedEpoch --epoch 3 --experiment test"


def test_intact_embeddings_read(embeddings):
    assert [s["rows"] for s in read_manifest(embeddings)["shards"]] == [8, 8, 8, 6]
    emb = load_embeddings(embeddings, "val")
    np.testing.assert_array_equal(emb.image_ids, np.arange(20, 30))
    assert emb.vectors.shape == (10, 4)


@pytest.mark.parametrize("damage", [truncate_half, lambda p: corrupt_file(p, "garbage"), overwrite_footer,
                                    lambda p: overwrite_column(p, "vector"),
                                    lambda p: overwrite_column(p, "image_id")],
                         ids=["truncated", "garbage", "footer-overwritten", "vectors-overwritten",
                              "ids-overwritten"])
def test_damaged_shard(embeddings, damage):
    shard = embeddings / "part-00001.parquet"
    damage(shard)
    for split in ("train", None):
        err = expect_corrupt(lambda: load_embeddings(embeddings, split), shard, embeddings, EMBED)
        assert err.__cause__ is not None


def test_overwritten_vector_bytes_are_caught_by_page_checksums(root):
    """Random floats are stored as they are, so overwritten bytes would decode as other vectors:
    the shards' page checksums catch that."""
    emb = paths.embeddings_dir(root, EXPERIMENT, 3)
    n = 200
    index = pd.DataFrame({"image_id": np.arange(n), "split": "train", "label": np.arange(n) % 3})
    write_shards(emb, index, np.random.default_rng(1).normal(size=(n, 16)).astype(np.float32), epoch=1)
    shard = emb / "part-00000.parquet"
    chunk = next(c for c in map(pq.read_metadata(shard).row_group(0).column, range(5))
                 if c.path_in_schema.startswith("vector."))
    assert chunk.total_compressed_size > 10_000
    overwrite(shard, _chunk_start(chunk) + 5_000, 16)  # well inside the first page, past its header
    unchecked = pq.read_table(shard, page_checksum_verification=False)  # decodes "fine" without the check
    assert unchecked.num_rows == n
    err = expect_corrupt(lambda: load_embeddings(emb), shard, emb, EMBED)
    assert "checksum" in str(err).lower()


def test_missing_shard(embeddings):
    shard = embeddings / "part-00002.parquet"
    shard.unlink()
    err = expect_corrupt(lambda: load_embeddings(embeddings, "val"), shard, embeddings, EMBED)
    assert "missing" in str(err)


def test_shard_with_other_rows_than_the_manifest(embeddings):
    shard = embeddings / "part-00000.parquet"
    pq.write_table(pq.read_table(shard).slice(0, 5), shard)  # a valid file, three vectors short
    err = expect_corrupt(lambda: load_embeddings(embeddings), shard, embeddings, EMBED)
    assert "5 rows" in str(err) and "8" in str(err)


def _edit_manifest(emb: Path, **changes) -> None:
    manifest = json.loads((emb / MANIFEST).read_text())
    manifest.update(changes)
    (emb / MANIFEST).write_text(json.dumps(manifest))


def test_manifest_vector_size_differs_from_the_shards(embeddings):
    _edit_manifest(embeddings, dim=5)
    expect_corrupt(lambda: load_embeddings(embeddings, "train"), embeddings / "part-00000.parquet", embeddings, EMBED)


@pytest.mark.parametrize("changes", [{"rows": 31}, {"splits": {"train": 20, "val": 11}}],
                         ids=["total-rows", "split-rows"])
def test_manifest_counts_differ_from_the_shards(embeddings, changes):
    _edit_manifest(embeddings, **changes)
    expect_corrupt(lambda: load_embeddings(embeddings, "val"), embeddings / MANIFEST, embeddings, EMBED)


@pytest.mark.parametrize("damage", [
    truncate_half,
    lambda p: corrupt_file(p, "zero"),
    lambda p: corrupt_file(p, "garbage"),
    lambda p: p.write_text("[1, 2, 3]"),
    lambda p: p.write_text(json.dumps({"dim": 4, "rows": 30})),
    lambda p: p.write_text(json.dumps({"dim": 4, "rows": 8, "shards": [{"file": "../../x.parquet", "rows": 8}]})),
], ids=["truncated", "empty", "garbage", "not-an-object", "no-shards", "path-outside"])
def test_damaged_manifest(embeddings, damage):
    damage(embeddings / MANIFEST)
    expect_corrupt(lambda: read_manifest(embeddings), embeddings / MANIFEST, embeddings, EMBED)
    expect_corrupt(lambda: load_embeddings(embeddings, "train"), embeddings / MANIFEST, embeddings, EMBED)


def test_missing_manifest_is_still_a_missing_output(embeddings):
    (embeddings / MANIFEST).unlink()
    with pytest.raises(PipelineError, match="missing; run EmbedEpoch") as info:
        read_manifest(embeddings)
    assert not isinstance(info.value, CorruptArtifactError)


# --------------------------------------------------------------------------- triplet lists

TRIPLETS = "TripletList --epoch 2 --experiment test"


def test_intact_triplets_read(triplets):
    _, ids = read_list(triplets)
    assert ids.shape == (24, 3) and ids.dtype == np.int64
    assert len(read_triplets(triplets)) == 24
    assert read_triplet_meta(triplets)["strategy"] == "uniform"


@pytest.mark.parametrize("damage", [truncate_half, lambda p: corrupt_file(p, "garbage"), overwrite_footer],
                         ids=["truncated", "garbage", "footer-overwritten"])
def test_damaged_triplet_list(triplets, damage):
    part = triplets / PART
    damage(part)
    for read in (lambda: read_triplets(triplets), lambda: read_list(triplets), lambda: read_triplet_meta(triplets)):
        expect_corrupt(read, part, triplets, TRIPLETS)


@pytest.mark.parametrize("column", ["query", "negative"])
def test_overwritten_triplet_ids(triplets, column):
    part = triplets / PART
    overwrite_column(part, column)
    expect_corrupt(lambda: read_list(triplets), part, triplets, TRIPLETS)
    expect_corrupt(lambda: read_triplets(triplets), part, triplets, TRIPLETS)


def test_triplet_metadata_that_is_not_json(triplets):
    part = triplets / PART
    table = pq.read_table(part)
    pq.write_table(table.replace_schema_metadata({b"deep_ranking": b"{not json"}), part)
    expect_corrupt(lambda: read_triplet_meta(triplets), part, triplets, TRIPLETS)


def test_missing_triplet_list(triplets):
    shutil.rmtree(triplets)
    for read in (lambda: read_triplets(triplets), lambda: read_list(triplets), lambda: read_triplet_meta(triplets)):
        with pytest.raises(PipelineError, match="run the TripletList task"):
            read()


# --------------------------------------------------------------------------- which task rebuilds what


@pytest.mark.parametrize("rel, task, rerun, delete", [
    ("test/embeddings/epoch-003/part-00000.parquet", "EmbedEpoch", "EmbedEpoch --epoch 3 --experiment test",
     ["test/embeddings/epoch-003"]),
    ("test/embeddings/epoch-003", "EmbedEpoch", "EmbedEpoch --epoch 3 --experiment test",
     ["test/embeddings/epoch-003"]),
    ("datasets/folder-16px/pixels.npy", "IndexDataset", "IndexDataset", ["datasets/folder-16px"]),
    ("demo/triplets/epoch-012/part-00000.parquet", "TripletList", "TripletList --epoch 12 --experiment demo",
     ["demo/triplets/epoch-012"]),
    ("demo/train/epoch-000/_checkpoint.pt", "TrainEpoch", "TrainEpoch --epoch 0 --experiment demo",
     ["demo/train/epoch-000"]),
    ("demo/metrics/per_class/epoch-004.parquet", "ValidateEpoch", "ValidateEpoch --epoch 4 --experiment demo",
     ["demo/metrics/epoch-004.json", "demo/metrics/per_class/epoch-004.parquet",
      "demo/metrics/neighbors/epoch-004.parquet", "demo/metrics/queries/epoch-004.parquet",
      "demo/metrics/confusion/epoch-004.parquet"]),
    ("demo/metrics/epoch-004.json", "ValidateEpoch", "ValidateEpoch --epoch 4 --experiment demo",
     ["demo/metrics/epoch-004.json", "demo/metrics/per_class/epoch-004.parquet",
      "demo/metrics/neighbors/epoch-004.parquet", "demo/metrics/queries/epoch-004.parquet",
      "demo/metrics/confusion/epoch-004.parquet"]),
    ("demo/audit/images/epoch-002.parquet", "AuditEpoch", "AuditEpoch --epoch 2 --experiment demo",
     ["demo/audit/epoch-002.json", "demo/audit/images/epoch-002.parquet", "demo/audit/duplicates/epoch-002.parquet"]),
    ("demo/report/epochs-006/index.html", "Report", "Report --epochs 6 --experiment demo", ["demo/report/epochs-006"]),
])
def test_producer_of(tmp_path, rel, task, rerun, delete):
    # The artifacts root's own path holds names like "train" and "datasets": only the part below it counts.
    root = tmp_path / "train" / "datasets" / "artifacts"
    producer = storage.producer_of(root / rel)
    assert producer is not None
    assert producer.task == task and producer.rerun == rerun
    assert producer.delete == tuple(root / d for d in delete)
    hint = storage.rebuild_hint(root / rel)
    assert f"delete {root / delete[0]}" in hint and f"luigi --module tasks {rerun}" in hint


def test_producer_of_an_unknown_file(tmp_path):
    assert storage.producer_of(tmp_path / "notes.txt") is None
    assert str(tmp_path / "notes.txt") in storage.rebuild_hint(tmp_path / "notes.txt")


# --------------------------------------------------------------------------- checkpoints


def _checkpoint(root: Path) -> Path:
    path = paths.train_dir(root, EXPERIMENT, 3) / paths.CHECKPOINT_FILE
    path.parent.mkdir(parents=True)
    save_checkpoint(path, {"model": {"w": torch.arange(64.0)}, "epoch": 3})
    return path


@pytest.mark.parametrize("damage", ["truncated", "zero", "garbage"])
def test_damaged_checkpoint(tmp_path, damage):
    path = _checkpoint(tmp_path)
    corrupt_file(path, damage)
    with pytest.raises(CorruptArtifactError, match=r"TrainEpoch --epoch 3 --experiment test"):
        load_checkpoint(path)


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes_in_a_checkpoint_are_damage_not_an_untrusted_file(tmp_path, seed):
    # Overwritten bytes trip the unpickler in many ways (KeyError, IndexError,
    # UnpicklingError...); each must read as damage with the rebuild command.
    path = _checkpoint(tmp_path)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CorruptArtifactError) as caught:
        load_checkpoint(path)
    assert "TrainEpoch --epoch 3" in str(caught.value) and "upgrade" not in str(caught.value)
