"""Embedding shards: EmbedEpoch's vectors read back aligned with the dataset
index, whatever the shard size, and embed_images equal to a plain forward pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

import tasks
from pipeline.checkpoint import load_checkpoint
from pipeline.data.batches import to_float
from pipeline.data.pixel_store import open_store, read_index
from pipeline.embedding.embed import embed_images, load_embeddings, read_manifest, write_shards
from pipeline.network import ModelSettings, build_model
from tests.support import assert_succeeded, build

MODEL = ModelSettings(arch="resnet18", width=8, embedding_dim=8, stem="small-s2")  # fast_config's [model]


def plain_forward(net: torch.nn.Module, store: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The reference: one image at a time through the network in eval mode."""
    net.eval()
    with torch.no_grad():
        return np.concatenate([net(to_float(torch.from_numpy(np.array(store[[i]])))).numpy() for i in ids])


def dataset_dir(tmp_path: Path) -> Path:
    (ds,) = (tmp_path / "artifacts" / "datasets").iterdir()
    return ds


def test_embed_epoch_shards_are_aligned_with_the_index(fast_pipeline, tmp_path):
    result = build([tasks.EmbedEpoch(epoch=0), tasks.EmbedEpoch(experiment="sharded", epoch=0, rows_per_shard=7)])
    assert_succeeded(result)
    ds = dataset_dir(tmp_path)
    index = read_index(ds, ["image_id", "split", "label"])
    assert len(index) == 48  # 3 classes x (12 train + 4 val)

    emb_dir = tmp_path / "artifacts" / "test" / "embeddings" / "epoch-000"
    manifest = read_manifest(emb_dir)
    assert manifest["rows"] == 48 and manifest["dim"] == 8
    assert manifest["splits"] == {"train": 36, "val": 12}
    assert manifest["epoch"] == 0
    assert sum(s["rows"] for s in manifest["shards"]) == 48

    for split, count in (("train", 36), ("val", 12)):
        emb = load_embeddings(emb_dir, split)
        part = index[index["split"] == split].sort_values("image_id")
        assert len(emb.image_ids) == count
        np.testing.assert_array_equal(emb.image_ids, part["image_id"].to_numpy())
        np.testing.assert_array_equal(emb.labels, part["label"].to_numpy())
        assert emb.vectors.shape == (count, 8) and emb.vectors.dtype == np.float32
        assert np.isfinite(emb.vectors).all()
    everything = load_embeddings(emb_dir)
    np.testing.assert_array_equal(everything.image_ids, np.arange(48))
    np.testing.assert_array_equal(everything.labels, index["label"].to_numpy())

    # Row i really is image i under epoch 0's network.
    net = build_model(MODEL)
    net.load_state_dict(load_checkpoint(tmp_path / "artifacts" / "test" / "train" / "epoch-000" / "_checkpoint.pt")
                        ["model"])
    picks = np.array([0, 5, 17, 35, 36, 40, 47])
    np.testing.assert_allclose(everything.vectors[picks], plain_forward(net, open_store(ds), picks),
                               rtol=1e-4, atol=1e-5)

    # Small shards: several files, same rows and vectors.
    sharded_dir = tmp_path / "artifacts" / "sharded" / "embeddings" / "epoch-000"
    sharded = read_manifest(sharded_dir)
    assert [s["rows"] for s in sharded["shards"]] == [7, 7, 7, 7, 7, 7, 6]
    assert sorted(p.name for p in sharded_dir.glob("part-*.parquet")) == [s["file"] for s in sharded["shards"]]
    assert sharded["rows"] == 48 and sharded["dim"] == 8 and sharded["splits"] == manifest["splits"]
    for split in ("train", "val", None):
        a, b = load_embeddings(emb_dir, split), load_embeddings(sharded_dir, split)
        np.testing.assert_array_equal(a.image_ids, b.image_ids)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.vectors, b.vectors)


def test_embed_images_matches_a_plain_forward_loop(tmp_path):
    rng = np.random.default_rng(0)
    store = rng.integers(0, 256, size=(23, 16, 16, 3), dtype=np.uint8)
    torch.manual_seed(0)
    net = build_model(ModelSettings(width=8, embedding_dim=6, stem="small-s2"))
    # Put batch norm's running statistics away from their defaults so eval mode matters.
    net.train()
    with torch.no_grad():
        net(to_float(torch.from_numpy(store)))
    ids = np.array([22, 3, 3, 0, 17, 9, 11, 5, 21, 1, 14])  # any order, with a repeat
    got = embed_images(net, store, ids, batch_size=4, show_bar=False)
    assert got.shape == (len(ids), 6) and got.dtype == np.float32
    assert not net.training
    np.testing.assert_allclose(got, plain_forward(net, store, ids), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got[1], got[2])
    # The batch size does not change the vectors.
    np.testing.assert_allclose(embed_images(net, store, ids, batch_size=512, show_bar=False), got,
                               rtol=1e-5, atol=1e-6)


def test_written_shards_round_trip_in_id_order(tmp_path):
    """Shards written in any row order load back sorted by image id, vectors following their ids."""
    import pandas as pd

    ids = np.array([4, 0, 3, 1, 2, 5])
    index = pd.DataFrame({"image_id": ids, "split": ["val", "train", "val", "train", "train", "val"],
                          "label": [1, 0, 1, 0, 1, 0]})
    vectors = np.arange(18, dtype=np.float32).reshape(6, 3) + ids[:, None] * 100
    manifest = write_shards(tmp_path / "emb", index, vectors, epoch=2, rows_per_shard=4)
    assert json.loads((tmp_path / "emb" / "_manifest.json").read_text()) == manifest
    assert [s["rows"] for s in manifest["shards"]] == [4, 2]
    val = load_embeddings(tmp_path / "emb", "val")
    np.testing.assert_array_equal(val.image_ids, [3, 4, 5])
    np.testing.assert_array_equal(val.labels, [1, 1, 0])
    np.testing.assert_array_equal(val.vectors, vectors[[2, 0, 5]])
