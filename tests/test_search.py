"""Similar-image search: ``python -m pipeline.search`` and the :class:`Searcher` under it.

Two experiments are built once for this module, each by the real ``SearchIndex``
task in a subprocess: the embedded Fashion-MNIST subset at its native 28 pixels,
trained for one short epoch (the validation-neighbour test), and a Tiny ImageNet
tree of JPEG files (RGB, greyscale and CMYK) indexed at epoch 0, the initial
network (the file tests: every indexed image finds itself, whatever the network).
"""

from __future__ import annotations

import collections
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.data.pixel_store import open_store, read_index
from pipeline.embedding.embed import load_embeddings
from pipeline.errors import BadImageError, ConfigError, CorruptArtifactError, DatasetLayoutError
from pipeline.search import cli
from pipeline.search.index import build_search_index, load_search_index
from pipeline.search.locate import dataset_folder
from pipeline.search.searcher import Searcher
from pipeline.search.settings import SearchIndexSettings
from tests.datagen import class_image, make_tiny_imagenet
from tests.support import fast_config

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 300  # seconds for one command; each takes a few on two cores
EXPERIMENT = "test"

# The shipped defaults' kind of run, cut to one short epoch: a narrow ResNet-18 on the
# embedded set at 28 pixels, one batched list that forwards each training image once.
FASHION = {
    "run": {"experiment": EXPERIMENT, "seed": 0, "epochs": 1},
    "dataset": {"source": "embedded", "dask_scheduler": "synchronous"},
    "model": {"arch": "resnet18", "width": 8, "embedding_dim": 32, "stem": "small-s2"},
    "TripletList": {"strategy": "batched", "image_passes": 1, "mine_first_epoch": False,
                    "dask_scheduler": "synchronous", "n_blocks": 2},
    "TrainEpoch": {"lr": 0.01},
    "EmbedEpoch": {"batch_size": 256},
    "compute": {"device": "cpu", "threads": 1},
}

_BUILD = """
import sys, luigi, tasks
SearchIndex = getattr(tasks, "SearchIndex", None)
if SearchIndex is None:  # until the package exports it
    from tasks.search_index import SearchIndex
ok = luigi.build([SearchIndex(epoch=int(sys.argv[1]))], local_scheduler=True, workers=1)
raise SystemExit(0 if ok else 1)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "DASK_SCHEDULER": "synchronous"}


def _build(base: Path, sections: dict[str, dict[str, object]], epoch: int) -> Path:
    """Run ``SearchIndex --epoch`` under ``sections`` in ``base``; return the artifacts root."""
    sections = {**sections, "artifacts": {"root": base / "artifacts"}}
    config = base / "luigi.cfg"
    config.write_text("".join(f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()) + "\n"
                              for s, values in sections.items()))
    proc = subprocess.run([sys.executable, "-c", _BUILD, str(epoch)], cwd=base, timeout=TIMEOUT, text=True,
                          check=False, env={**_env(), "LUIGI_CONFIG_PATH": str(config)}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
    assert proc.returncode == 0, proc.stdout[-6000:]
    return base / "artifacts"


def search(root: Path, *args: object) -> subprocess.CompletedProcess:
    """``python -m pipeline.search --artifacts root --experiment test ARGS`` from the repository."""
    return subprocess.run([sys.executable, "-m", "pipeline.search", "--artifacts", str(root),
                           "--experiment", EXPERIMENT, *map(str, args)], cwd=REPO, env=_env(), timeout=TIMEOUT,
                          capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def fashion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Artifacts root of the embedded set after one short epoch, epoch 1 indexed (train split)."""
    return _build(tmp_path_factory.mktemp("fashion"), FASHION, epoch=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(artifacts root, dataset root) of a Tiny ImageNet tree, epoch 0 indexed."""
    base = tmp_path_factory.mktemp("tiny")
    dataset = make_tiny_imagenet(base / "tiny-imagenet-200", n_classes=3, train_per_class=8, val_per_class=2,
                                 grayscale=2, cmyk=2)
    return _build(base, fast_config(base, dataset), epoch=0), dataset


@pytest.fixture(scope="module")
def val_files(fashion: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The first three validation images of each class as PNG files (image_id, label, file)."""
    dataset = next((fashion / "datasets").iterdir())
    index = read_index(dataset, ["image_id", "split", "label"])
    rows = index[index["split"] == "val"].groupby("label").head(3).reset_index(drop=True)
    store, out = open_store(dataset), tmp_path_factory.mktemp("val-files")
    rows["file"] = [out / f"val_{i}.png" for i in rows["image_id"]]
    for image_id, file in zip(rows["image_id"], rows["file"]):
        Image.fromarray(store[image_id]).save(file)
    return rows


def odd_images(folder: Path) -> list[Path]:
    """Query files unlike the dataset's: greyscale and CMYK JPEGs, an RGBA PNG of another
    size and shape, and a 16-bit greyscale PNG."""
    rng = np.random.default_rng(5)
    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(class_image(1, 3, 40, rng))
    files = {"grey.jpg": rgb.convert("L"), "cmyk.jpg": rgb.convert("CMYK"),
             "wide.png": rgb.resize((50, 30)).convert("RGBA"),
             "deep.png": Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257)}
    for name, img in files.items():
        img.save(folder / name)
    return [folder / name for name in files]


def test_training_files_find_themselves_first(tiny: tuple[Path, Path], tmp_path: Path):
    root, dataset = tiny
    items = pd.read_parquet(root / EXPERIMENT / "search" / "epoch-000" / "items.parquet")
    modes = {p: Image.open(dataset / p).mode for p in items["path"]}
    assert {"RGB", "L", "CMYK"} <= set(modes.values())  # the JPEG kinds indexing accepts are all queried
    files = [dataset / p for p in items["path"]]
    extra = odd_images(tmp_path / "odd")
    page = tmp_path / "out" / "page.html"
    proc = search(root, "--epoch", 0, "--k", 3, "--json", "--html", page, *files, *extra)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["experiment"], doc["epoch"], doc["k"]) == (EXPERIMENT, 0, 3)
    queries = doc["queries"]
    assert [q["query"] for q in queries] == [str(f) for f in files + extra]
    for q, image_id, file in zip(queries, items["image_id"], files):
        first = q["hits"][0]
        assert (first["rank"], first["image_id"]) == (1, image_id), q["query"]
        assert first["distance"] < 1e-4 and q["hits"][1]["distance"] > first["distance"]
        assert first["source_path"] == str(file.resolve())
        assert first["class_name"] == items.set_index("image_id").loc[image_id, "class_name"]
    for q in queries[len(files):]:
        assert len(q["hits"]) == 3 and q["kind"] == "file"
        assert all(h["distance"] > 0 for h in q["hits"])
    html = page.read_text()
    assert html.count('<img src="data:image/png;base64,') == len(queries) * 4
    assert [p.name for p in page.parent.iterdir()] == ["page.html"]  # written atomically: no temporary left


def test_text_output_and_id_queries(tiny: tuple[Path, Path], capsys: pytest.CaptureFixture):
    """The default output, one table per query (in-process: the subprocess tests cover the command)."""
    root, dataset = tiny
    items = pd.read_parquet(root / EXPERIMENT / "search" / "epoch-000" / "items.parquet")
    file = dataset / items["path"].iloc[4]
    argv = ["--artifacts", str(root), "--experiment", EXPERIMENT, "--epoch", "0", "--k", "2",
            "--id", str(items["image_id"].iloc[7]), str(file)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{EXPERIMENT}, epoch 0: {len(items)} indexed train images"
    header = out.index(f"query: {file}") + 1
    assert out[header].split() == ["rank", "image_id", "class", "distance", "source"]
    rank, image_id, *_, distance, source = out[header + 1].split()
    assert (rank, int(image_id), float(distance), source) == ("1", items["image_id"].iloc[4], 0.0, str(file))
    top = out[out.index(f"query: id {items['image_id'].iloc[7]}") + 2].split()
    assert int(top[1]) == items["image_id"].iloc[7] and float(top[-2]) == 0.0


def test_validation_images_find_their_class(fashion: Path, val_files: pd.DataFrame):
    """After one short epoch, most validation images' 10 nearest training images are mostly of their class."""
    train_id, val_id = 0, int(val_files["image_id"].iloc[0])
    proc = search(fashion, "--epoch", 1, "--json", "--id", train_id, "--id", val_id, *val_files["file"])
    assert proc.returncode == 0, proc.stderr
    queries = json.loads(proc.stdout)["queries"]
    by_id, val_query, by_file = queries[0], queries[1], queries[2:]
    assert by_id["hits"][0]["image_id"] == train_id and by_id["hits"][0]["distance"] == 0.0
    assert len(by_file) == len(val_files) == 30
    majority = [collections.Counter(h["label"] for h in q["hits"]).most_common(1)[0][0] for q in by_file]
    correct = int((np.array(majority) == val_files["label"].to_numpy()).sum())
    # Chance is 3 of 30; one short epoch gets about 20 (Shirt, Pullover and Coat stay mixed).
    assert correct >= 15, f"only {correct} of 30 validation images have neighbours mostly of their class"
    # --id of a validation image (not indexed) is embedded from the store: the same answer as its file.
    assert val_query["label"] == val_files["label"].iloc[0]
    np.testing.assert_allclose([h["distance"] for h in val_query["hits"]],
                               [h["distance"] for h in by_file[0]["hits"]], atol=1e-4)
    assert all(h["split"] == "train" for q in by_file for h in q["hits"])


def test_queries_get_exactly_the_validation_vectors(fashion: Path, val_files: pd.DataFrame):
    searcher = Searcher.from_artifacts(fashion, EXPERIMENT, 1)
    assert searcher.image_size == 28 and searcher.available_epochs(fashion, EXPERIMENT) == [1]
    stored = load_embeddings(fashion / EXPERIMENT / "embeddings" / "epoch-001", "val")
    rows = np.searchsorted(stored.image_ids, val_files["image_id"].to_numpy())
    from_files = searcher.embed_images(list(val_files["file"]))
    np.testing.assert_allclose(from_files, stored.vectors[rows], rtol=0, atol=1e-5)
    from_bytes = searcher.embed_images([Path(f).read_bytes() for f in val_files["file"]])
    np.testing.assert_array_equal(from_bytes, from_files)


def test_uploads_decode_like_files(tiny: tuple[Path, Path], tmp_path: Path):
    searcher = Searcher.from_artifacts(tiny[0], EXPERIMENT, 0)
    files = odd_images(tmp_path)
    np.testing.assert_array_equal(searcher.decode([f.read_bytes() for f in files]), searcher.decode(files))
    hits = searcher.search_files([files[0].read_bytes()], k=2)[0]
    assert [h.image_id for h in hits] == [h.image_id for h in searcher.search_files([files[0]], k=2)[0]]
    with pytest.raises(BadImageError, match="upload"):
        searcher.embed_images([b"GIF89a not really"])
    thumb = searcher.thumbnail_png(int(hits[0].image_id), size=40)
    assert Image.open(io.BytesIO(thumb)).size == (40, 40)


def test_a_text_file_is_refused_naming_it(fashion: Path, tmp_path: Path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    proc = search(fashion, "--epoch", 1, notes)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: cannot decode image") and str(notes) in proc.stderr


def test_an_untrained_epoch_is_refused_with_the_command(fashion: Path):
    proc = search(fashion, "--epoch", 7, "--id", 0)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "epoch 7 of experiment 'test' is not trained" in proc.stderr
    assert f"luigi --module tasks SearchIndex --experiment {EXPERIMENT} --epoch 7" in proc.stderr


@pytest.mark.parametrize("args, expected", [
    (["--experiment", "nope", "--epoch", "1", "--id", "0"],
     ["experiment 'nope' does not exist", "experiments there: test", "RunAll --experiment nope"]),
    (["--experiment", "test", "--epoch", "0", "--id", "0"],  # trained (the initial network), never indexed
     ["epoch 0 of experiment 'test' has no search index", "indexed epochs: 1",
      "SearchIndex --experiment test --epoch 0"]),
    (["--experiment", "test", "--epoch", "1", "--id", "7000"], ["image id 7000 is not in the dataset", "ids 0-6999"]),
    (["--experiment", "test", "--epoch", "1", "missing.jpg"], ["cannot read image missing.jpg"]),
])
def test_missing_things_are_named(fashion: Path, capsys: pytest.CaptureFixture, args: list[str],
                                  expected: list[str]):
    assert cli.main(["--artifacts", str(fashion), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    for text in expected:
        assert text in err


def test_no_query_is_a_usage_error(fashion: Path, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--artifacts", str(fashion), "--epoch", "1"])
    assert stop.value.code == 2 and "give at least one IMAGE or --id" in capsys.readouterr().err


def test_a_damaged_index_names_the_task_that_rebuilds_it(fashion: Path, tmp_path: Path):
    copy = tmp_path / EXPERIMENT / "search" / "epoch-001"
    shutil.copytree(fashion / EXPERIMENT / "search" / "epoch-001", copy)
    data = (copy / "index.faiss").read_bytes()
    (copy / "index.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptArtifactError, match=r"index\.faiss.*SearchIndex --epoch 1 --experiment test"):
        load_search_index(copy)


def test_an_index_of_train_and_val(fashion: Path, tmp_path: Path):
    exp = fashion / EXPERIMENT
    dataset = next((fashion / "datasets").iterdir())
    out = tmp_path / "search"
    meta = build_search_index(exp / "embeddings" / "epoch-001", dataset, out, SearchIndexSettings(splits="train+val"),
                              epoch=1, experiment=EXPERIMENT, dataset_root=None)
    assert (meta["splits"], meta["count"], meta["dim"]) == (["train", "val"], 7000, 32)
    assert meta["dataset_dir"] == str(dataset.resolve()) and meta["dataset_root"] is None
    files = load_search_index(out)
    assert files.items["split"].tolist() == ["train"] * 6000 + ["val"] * 1000
    assert (files.items["path"] == "").all()  # the embedded arrays have no source files
    index = read_index(dataset, ["image_id", "class_name"]).set_index("image_id")
    assert files.items["class_name"].tolist() == index.loc[files.items["image_id"], "class_name"].tolist()
    with pytest.raises(ConfigError, match=r"\[SearchIndex\] splits = 'val'"):
        build_search_index(exp / "embeddings" / "epoch-001", dataset, tmp_path / "x", SearchIndexSettings(splits="val"),
                           epoch=1, experiment=EXPERIMENT, dataset_root=None)


def test_the_dataset_is_found_after_the_artifacts_moved(fashion: Path):
    dataset = next((fashion / "datasets").iterdir())
    assert dataset_folder(fashion, EXPERIMENT, {"dataset_dir": "/moved/away/embedded-28px"}) == dataset
    with pytest.raises(DatasetLayoutError, match="/moved/away/embedded-28px"):
        dataset_folder(fashion, "other", {"dataset_dir": "/moved/away/embedded-28px"})
