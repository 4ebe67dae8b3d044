"""Dataset indexing, through the IndexDataset task and through ``build_index``.

What a user relies on: one folder per dataset under ``<artifacts>/datasets/``
holding a dense Parquet index and a packed RGB pixel store; every bad input
fails with a message naming the offending path; a crash never leaves a folder
that looks complete.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import luigi
import numpy as np
import pandas as pd
import pytest
from luigi.execution_summary import LuigiStatusCode

import pipeline.data.indexing
import tasks
from pipeline.data.indexing import build_index
from pipeline.data.settings import IndexSettings
from pipeline.data.sources.decode import decode_image
from pipeline.errors import BadImageError, ConfigError, DatasetLayoutError, PipelineError
from tests.datagen import TINY_IMAGENET_WORDS, corrupt_file, make_image_folder, make_tiny_imagenet, tiny_imagenet_wnids
from tests.support import assert_succeeded, build, fast_config

INDEX_COLUMNS = ["image_id", "split", "label", "class_id", "class_name", "path", "width", "height", "mode"]
FASHION_MNIST_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                       "Ankle boot"]
SIZE = 16  # stored_size in fast_config


# --------------------------------------------------------------------------- helpers


def _dataset_dirs(artifacts: Path) -> list[Path]:
    """Folders under datasets/ that look like finished outputs (not Luigi temporaries)."""
    base = artifacts / "datasets"
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if not p.name.startswith(".tmp-"))


def _index_task(configure, tmp_path: Path, root: Path, source: str, **dataset) -> tasks.IndexDataset:
    cfg = fast_config(tmp_path, root, source=source)
    cfg["dataset"].update(dataset)
    configure(cfg)
    return tasks.IndexDataset()


def _build_ok(task: luigi.Task) -> Path:
    result = build([task])
    assert_succeeded(result)
    return Path(task.output().path)


def _check_index(ds: Path, n_expected: int, size: int = SIZE) -> tuple[pd.DataFrame, np.ndarray]:
    index = pd.read_parquet(ds / "index.parquet")
    assert list(index.columns) == INDEX_COLUMNS
    assert index["image_id"].tolist() == list(range(n_expected))
    assert set(index["split"]) == {"train", "val"}
    assert index["label"].dtype == np.int64
    store = np.load(ds / "pixels.npy", mmap_mode="r")
    assert isinstance(store, np.memmap)
    assert store.shape == (n_expected, size, size, 3) and store.dtype == np.uint8
    return index, store


def _check_rows_match_files(index: pd.DataFrame, store: np.ndarray, root: Path, size: int = SIZE) -> None:
    """Row i of the store holds the decoded pixels of the file index row i names."""
    for row in index.itertuples():
        expected, _, _ = decode_image(root / row.path, size)
        np.testing.assert_array_equal(store[row.image_id], expected, err_msg=row.path)


def _small_tin(tmp_path: Path) -> Path:
    return make_tiny_imagenet(tmp_path / "tin", n_classes=2, train_per_class=3, val_per_class=2, size=16)


def _small_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "folder", train_per_class=3, val_per_class=1, size=16)


# --------------------------------------------------------------------------- both layouts


def test_tiny_imagenet_index_and_store(configure, tmp_path, tiny_imagenet):
    ds = _build_ok(_index_task(configure, tmp_path, tiny_imagenet, "tiny-imagenet"))
    assert ds == tmp_path / "artifacts" / "datasets" / "tiny-imagenet-16px"
    index, store = _check_index(ds, 3 * 12 + 3 * 4)

    wnids = tiny_imagenet_wnids(3)
    assert (index["split"] == "train").sum() == 36 and (index["split"] == "val").sum() == 12
    # Labels are dense in sorted-wnid order; names are words.txt's first name.
    classes = index.drop_duplicates("class_id").set_index("class_id").sort_index()
    assert classes.index.tolist() == wnids
    assert classes["label"].tolist() == [0, 1, 2]
    assert classes["class_name"].tolist() == [TINY_IMAGENET_WORDS[w].split(",")[0] for w in wnids]
    assert "goldfish" in set(classes["class_name"])
    # Paths are relative to the dataset root and point at the files.
    for rel in index["path"]:
        assert not rel.startswith("/") and ".." not in rel.split("/")
        assert (tiny_imagenet / rel).is_file()
    train = index[index["split"] == "train"]
    assert all(p.startswith(f"train/{c}/images/") for p, c in zip(train["path"], train["class_id"]))
    # Val labels come from val_annotations.txt.
    ann = dict(line.split("\t")[:2] for line in (tiny_imagenet / "val" / "val_annotations.txt").read_text().splitlines())
    val = index[index["split"] == "val"]
    assert {p.split("/")[-1]: c for p, c in zip(val["path"], val["class_id"])} == ann
    # Width/height/mode describe the file as stored, not the stored size.
    assert set(index["width"]) == {64} and set(index["height"]) == {64}
    assert sorted(index["mode"].tolist()).count("L") == 1
    assert sorted(index["mode"].tolist()).count("CMYK") == 1
    _check_rows_match_files(index, store, tiny_imagenet)


def test_tiny_imagenet_grayscale_and_cmyk_become_rgb(configure, tmp_path, tiny_imagenet):
    ds = _build_ok(_index_task(configure, tmp_path, tiny_imagenet, "tiny-imagenet"))
    index, store = _check_index(ds, 48)
    px = np.asarray(store, dtype=np.float64)

    grey = index.index[index["mode"] == "L"]
    assert len(grey) == 1
    g = px[grey[0]]
    assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 1], g[..., 2])

    # The CMYK image is a class-hued picture like its RGB siblings: its mean colour
    # must be close to theirs (an un-inverted or dropped channel would be far off).
    row = index[index["mode"] == "CMYK"].iloc[0]
    siblings = index[(index["label"] == row["label"]) & (index["mode"] == "RGB") & (index["split"] == "train")]
    cmyk_mean = px[row["image_id"]].mean(axis=(0, 1))
    rgb_mean = px[siblings["image_id"].to_numpy()].mean(axis=(0, 1, 2))
    assert np.abs(cmyk_mean - rgb_mean).max() < 40, (cmyk_mean, rgb_mean)
    # And colour images keep distinct channels.
    assert not np.array_equal(px[row["image_id"]][..., 0], px[row["image_id"]][..., 2])


def test_image_folder_index_and_store(configure, tmp_path, image_folder):
    task = _index_task(configure, tmp_path, image_folder, "image-folder", name="pets")
    ds = _build_ok(task)
    assert ds == tmp_path / "artifacts" / "datasets" / "pets-16px"
    index, store = _check_index(ds, 3 * 10 + 3 * 4)
    classes = index.drop_duplicates("class_id").set_index("class_id").sort_index()
    assert classes.index.tolist() == ["cat", "dog", "frog"]
    assert classes["label"].tolist() == [0, 1, 2]
    assert classes["class_name"].tolist() == ["cat", "dog", "frog"]
    for rel, split, cls in zip(index["path"], index["split"], index["class_id"]):
        assert rel.startswith(f"{split}/{cls}/") and (image_folder / rel).is_file()
    assert set(index["width"]) == {48} and set(index["height"]) == {48}
    grey = index[index["path"] == "train/cat/cat_1.png"]
    assert grey["mode"].tolist() == ["L"]
    g = np.asarray(store[int(grey["image_id"].iloc[0])])
    assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 1], g[..., 2])
    assert set(index["mode"]) == {"RGB", "L"}
    _check_rows_match_files(index, store, image_folder)


def test_build_index_directly(tmp_path, image_folder):
    out = tmp_path / "out"
    settings = IndexSettings(source="image-folder", root=str(image_folder), stored_size=8, dask_scheduler="synchronous",
                             partition_size=7)  # several partitions
    summary = build_index(settings, out)
    assert summary["images"] == {"train": 30, "val": 12}
    assert summary["classes"] == 3 and summary["skipped"] == 0 and summary["stored_size"] == 8
    index, store = _check_index(out, 42, size=8)
    _check_rows_match_files(index, store, image_folder, size=8)
    assert len(pd.read_parquet(out / "skipped.parquet")) == 0


def test_index_is_the_same_with_threads(tmp_path, tiny_imagenet):
    """The dask scheduler is a run-only knob: threads give the same index and pixels."""
    outs = []
    for scheduler in ("synchronous", "threads"):
        out = tmp_path / scheduler
        build_index(IndexSettings(source="tiny-imagenet", root=str(tiny_imagenet), stored_size=8,
                                  dask_scheduler=scheduler, partition_size=5), out)
        outs.append(out)
    pd.testing.assert_frame_equal(pd.read_parquet(outs[0] / "index.parquet"), pd.read_parquet(outs[1] / "index.parquet"))
    np.testing.assert_array_equal(np.load(outs[0] / "pixels.npy"), np.load(outs[1] / "pixels.npy"))


def test_embedded_default_dataset(configure, tmp_path):
    # Only the artifacts root is set: the default source is the embedded Fashion-MNIST subset.
    configure({"artifacts": {"root": tmp_path / "artifacts"}, "dataset": {"dask_scheduler": "synchronous"}})
    task = tasks.IndexDataset()
    assert task.source == "embedded"
    ds = _build_ok(task)
    assert ds.name == "embedded-28px"
    index, store = _check_index(ds, 7000, size=28)
    assert (index["split"] == "train").sum() == 6000 and (index["split"] == "val").sum() == 1000
    assert sorted(index["label"].unique().tolist()) == list(range(10))
    names = index.drop_duplicates("label").set_index("label")["class_name"].sort_index()
    assert names.tolist() == FASHION_MNIST_NAMES
    assert index.groupby("split")["label"].value_counts().unique().tolist() in ([600, 100], [100, 600])
    sample = np.asarray(store[::500])
    assert np.array_equal(sample[..., 0], sample[..., 2]) and sample.max() > 0


def test_summary_json_and_log_line(configure, tmp_path, tiny_imagenet, capsys):
    import json

    ds = _build_ok(_index_task(configure, tmp_path, tiny_imagenet, "tiny-imagenet"))
    summary = json.loads((ds / "summary.json").read_text())
    assert summary["images"] == {"train": 36, "val": 12}
    assert summary["classes"] == 3 and summary["skipped"] == 0 and summary["stored_size"] == SIZE
    assert "36 train, 12 val images, 3 classes" in capsys.readouterr().out


# --------------------------------------------------------------------------- bad inputs


def _rewrite_first_annotation(root: Path, name: str | None = None, wnid: str | None = None) -> None:
    ann = root / "val" / "val_annotations.txt"
    lines = ann.read_text().splitlines()
    fields = lines[0].split("\t")
    fields[0] = name if name is not None else fields[0]
    fields[1] = wnid if wnid is not None else fields[1]
    lines[0] = "\t".join(fields)
    ann.write_text("\n".join(lines) + "\n")


def _first_train_image(root: Path) -> Path:
    wnid = tiny_imagenet_wnids(2)[0]
    return root / "train" / wnid / "images" / f"{wnid}_2.JPEG"


def _break_missing_root(root: Path) -> str:
    shutil.rmtree(root)
    return str(root)


def _break_missing_wnids(root: Path) -> str:
    (root / "wnids.txt").unlink()
    return str(root / "wnids.txt")


def _break_missing_annotations(root: Path) -> str:
    (root / "val" / "val_annotations.txt").unlink()
    return str(root / "val" / "val_annotations.txt")


def _break_empty_class(root: Path) -> str:
    folder = root / "train" / tiny_imagenet_wnids(2)[1] / "images"
    for f in folder.iterdir():
        f.unlink()
    return str(folder)


def _break_annotation_missing_file(root: Path) -> str:
    name = (root / "val" / "val_annotations.txt").read_text().split("\t")[0]
    (root / "val" / "images" / name).unlink()
    return str(root / "val" / "images" / name)


def _break_annotation_unknown_class(root: Path) -> str:
    _rewrite_first_annotation(root, wnid="n99999999")
    return "n99999999"


def _break_annotation_absolute(root: Path) -> str:
    _rewrite_first_annotation(root, name=str(root / "wnids.txt"))
    return str(root / "val" / "val_annotations.txt")


def _break_annotation_dotdot(root: Path) -> str:
    _rewrite_first_annotation(root, name="../../train/x.JPEG")
    return str(root / "val" / "val_annotations.txt")


def _corrupter(kind: str) -> Callable[[Path], str]:
    def breaker(root: Path) -> str:
        path = _first_train_image(root)
        corrupt_file(path, kind)
        return str(path)

    breaker.__name__ = f"_break_{kind}_image"
    return breaker


TIN_BREAKAGES = {
    "missing-root": (_break_missing_root, DatasetLayoutError),
    "missing-wnids": (_break_missing_wnids, DatasetLayoutError),
    "missing-val-annotations": (_break_missing_annotations, DatasetLayoutError),
    "empty-class-folder": (_break_empty_class, DatasetLayoutError),
    "annotation-missing-file": (_break_annotation_missing_file, DatasetLayoutError),
    "annotation-unknown-class": (_break_annotation_unknown_class, DatasetLayoutError),
    "annotation-absolute-path": (_break_annotation_absolute, DatasetLayoutError),
    "annotation-dotdot-path": (_break_annotation_dotdot, DatasetLayoutError),
    "truncated-image": (_corrupter("truncated"), BadImageError),
    "zero-byte-image": (_corrupter("zero"), BadImageError),
    "garbage-image": (_corrupter("garbage"), BadImageError),
}


@pytest.mark.parametrize("case", list(TIN_BREAKAGES))
def test_tiny_imagenet_bad_input_fails_the_task_naming_the_path(case, configure, tmp_path, task_errors):
    root = _small_tin(tmp_path)
    breaker, error_type = TIN_BREAKAGES[case]
    expected = breaker(root)
    task = _index_task(configure, tmp_path, root, "tiny-imagenet")
    result = build([task])
    assert result.status == LuigiStatusCode.FAILED, result.summary_text
    errors = [exc for t, exc in task_errors if isinstance(t, tasks.IndexDataset)]
    assert len(errors) == 1
    assert isinstance(errors[0], error_type), repr(errors[0])
    assert expected in str(errors[0])
    if case == "annotation-unknown-class":
        assert str(root / "val" / "val_annotations.txt") in str(errors[0])
    assert _dataset_dirs(tmp_path / "artifacts") == []
    assert not task.complete()


@pytest.mark.parametrize("case", list(TIN_BREAKAGES))
def test_build_index_bad_input_raises_pipeline_error(case, tmp_path):
    root = _small_tin(tmp_path)
    breaker, error_type = TIN_BREAKAGES[case]
    expected = breaker(root)
    with pytest.raises(PipelineError) as info:
        build_index(IndexSettings(source="tiny-imagenet", root=str(root), stored_size=8, dask_scheduler="synchronous"),
                    tmp_path / "out")
    assert isinstance(info.value, error_type)
    assert expected in str(info.value)


def _folder_missing_root(root: Path) -> str:
    shutil.rmtree(root)
    return str(root)


def _folder_empty_class(root: Path) -> str:
    folder = root / "train" / "dog"
    for f in folder.iterdir():
        f.unlink()
    return str(folder)


def _folder_corrupt(root: Path) -> str:
    path = root / "val" / "frog" / "frog_0.jpg"
    corrupt_file(path, "truncated")
    return str(path)


FOLDER_BREAKAGES = {
    "missing-root": (_folder_missing_root, DatasetLayoutError),
    "empty-class-folder": (_folder_empty_class, DatasetLayoutError),
    "truncated-image": (_folder_corrupt, BadImageError),
}


@pytest.mark.parametrize("case", list(FOLDER_BREAKAGES))
def test_image_folder_bad_input_fails_the_task_naming_the_path(case, configure, tmp_path, task_errors):
    root = _small_folder(tmp_path)
    breaker, error_type = FOLDER_BREAKAGES[case]
    expected = breaker(root)
    task = _index_task(configure, tmp_path, root, "image-folder")
    result = build([task])
    assert result.status == LuigiStatusCode.FAILED, result.summary_text
    errors = [exc for t, exc in task_errors if isinstance(t, tasks.IndexDataset)]
    assert len(errors) == 1 and isinstance(errors[0], error_type), errors
    assert expected in str(errors[0])
    assert _dataset_dirs(tmp_path / "artifacts") == []


def test_bad_image_message_says_how_to_skip(configure, tmp_path):
    root = _small_tin(tmp_path)
    path = _first_train_image(root)
    corrupt_file(path, "truncated")
    task = _index_task(configure, tmp_path, root, "tiny-imagenet")
    # run() directly: the message a user sees in the task's traceback.
    with pytest.raises(BadImageError) as info:
        task.run()
    msg = str(info.value)
    assert str(path) in msg and "on_bad_image = skip" in msg and "1 bad image" in msg
    assert _dataset_dirs(tmp_path / "artifacts") == []


def test_missing_root_setting_is_a_config_error(configure, tmp_path, task_errors):
    configure({"artifacts": {"root": tmp_path / "artifacts"},
               "dataset": {"source": "image-folder", "dask_scheduler": "synchronous"}})
    result = build([tasks.IndexDataset()])
    assert result.status == LuigiStatusCode.FAILED
    assert any("[dataset] root" in str(exc) for _, exc in task_errors)


@pytest.mark.parametrize("settings, named", [
    (dict(root="/data/copy"), "[dataset] root = '/data/copy' with [dataset] source = 'embedded'"),
    (dict(source="fashion-mnist", on_bad_image="skip"),
     "[dataset] on_bad_image = 'skip' with [dataset] source = 'fashion-mnist'"),
])
def test_a_setting_the_source_would_ignore_is_refused_by_the_key(settings, named):
    with pytest.raises(ConfigError) as info:
        IndexSettings(**settings).key()  # what IndexDataset.output() asks while Luigi schedules
    assert str(info.value).startswith(named) and "silently ignored" in str(info.value)


def test_sources_that_read_root_or_decode_files_take_those_settings(tmp_path):
    assert IndexSettings(source="fashion-mnist", root=str(tmp_path)).key() == "fashion-mnist-28px"
    assert IndexSettings(source="fashion-mnist").dataset_root() == Path("/usr/share/datasets/fashion-mnist")
    IndexSettings(source="image-folder", root=str(tmp_path), on_bad_image="skip").check()
    IndexSettings(source="embedded", dask_scheduler="synchronous").check()  # run-only knobs are never refused


def test_an_ignored_root_fails_the_dataset_while_scheduling(configure, tmp_path, task_errors):
    configure({"artifacts": {"root": tmp_path / "artifacts"}, "dataset": {"root": tmp_path}})
    result = build([tasks.IndexDataset()])
    assert result.status == LuigiStatusCode.SCHEDULING_FAILED, result.summary_text
    assert _dataset_dirs(tmp_path / "artifacts") == []


# --------------------------------------------------------------------------- on_bad_image = skip


def test_skip_leaves_bad_images_out_and_lists_them(configure, tmp_path):
    root = _small_tin(tmp_path)  # 2 classes x 3 train + 4 val = 10 images
    truncated = _first_train_image(root)
    corrupt_file(truncated, "truncated")
    val_name = (root / "val" / "val_annotations.txt").read_text().split("\t")[0]
    empty = root / "val" / "images" / val_name
    corrupt_file(empty, "zero")
    bad_rel = {str(truncated.relative_to(root)), str(empty.relative_to(root))}

    ds = _build_ok(_index_task(configure, tmp_path, root, "tiny-imagenet", on_bad_image="skip"))
    index, store = _check_index(ds, 8)  # ids stay dense 0..7
    assert not bad_rel & set(index["path"])
    _check_rows_match_files(index, store, root)  # the store was compacted in step with the index

    skipped = pd.read_parquet(ds / "skipped.parquet")
    assert set(skipped["path"]) == bad_rel
    assert set(skipped.columns) >= {"split", "path", "error"}
    by_path = skipped.set_index("path")
    assert by_path.loc[str(truncated.relative_to(root)), "split"] == "train"
    assert by_path.loc[str(empty.relative_to(root)), "split"] == "val"
    for rel, err in zip(skipped["path"], skipped["error"]):
        assert str(root / rel) in err
    assert "0-byte" in by_path.loc[str(empty.relative_to(root)), "error"]

    import json

    assert json.loads((ds / "summary.json").read_text())["skipped"] == 2


def test_skip_with_no_bad_images_writes_an_empty_skipped_list(tmp_path, image_folder):
    out = tmp_path / "out"
    build_index(IndexSettings(source="image-folder", root=str(image_folder), stored_size=8, on_bad_image="skip",
                              dask_scheduler="synchronous"), out)
    assert len(pd.read_parquet(out / "skipped.parquet")) == 0
    _check_index(out, 42, size=8)


# --------------------------------------------------------------------------- crashes


def test_crash_mid_indexing_leaves_no_dataset_and_rerun_completes(configure, tmp_path, tiny_imagenet, monkeypatch,
                                                                  task_errors):
    calls = {"n": 0}
    real = pipeline.data.indexing.decode_image

    def crashing(path, size):
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("simulated crash while decoding")
        return real(path, size)

    monkeypatch.setattr(pipeline.data.indexing, "decode_image", crashing)
    task = _index_task(configure, tmp_path, tiny_imagenet, "tiny-imagenet")
    result = build([task])
    assert result.status == LuigiStatusCode.FAILED, result.summary_text
    assert calls["n"] == 6
    assert any("simulated crash" in str(exc) for _, exc in task_errors)
    artifacts = tmp_path / "artifacts"
    assert _dataset_dirs(artifacts) == []
    assert not list(artifacts.rglob("index.parquet"))
    assert not task.complete()

    monkeypatch.setattr(pipeline.data.indexing, "decode_image", real)
    ds = _build_ok(tasks.IndexDataset())
    index, store = _check_index(ds, 48)
    _check_rows_match_files(index, store, tiny_imagenet)
    assert _dataset_dirs(artifacts) == [ds]


def test_crash_in_a_decode_partition(configure, tmp_path, image_folder, monkeypatch):
    real = pipeline.data.indexing._decode_partition

    def crashing(items, store_path, size):
        real(items, store_path, size)  # writes pixels, then dies before reporting
        raise MemoryError("simulated worker death")

    monkeypatch.setattr(pipeline.data.indexing, "_decode_partition", crashing)
    task = _index_task(configure, tmp_path, image_folder, "image-folder")
    assert build([task]).status == LuigiStatusCode.FAILED
    assert _dataset_dirs(tmp_path / "artifacts") == []

    monkeypatch.setattr(pipeline.data.indexing, "_decode_partition", real)
    ds = _build_ok(tasks.IndexDataset())
    _check_index(ds, 42)


def test_completed_index_is_not_rebuilt(configure, tmp_path, image_folder, monkeypatch):
    ds = _build_ok(_index_task(configure, tmp_path, image_folder, "image-folder"))
    before = (ds / "index.parquet").stat().st_mtime_ns

    def boom(*_a, **_k):
        raise AssertionError("a complete dataset must not be decoded again")

    monkeypatch.setattr(pipeline.data.indexing, "decode_image", boom)
    luigi.task_register.Register.clear_instance_cache()
    _build_ok(tasks.IndexDataset())
    assert (ds / "index.parquet").stat().st_mtime_ns == before
