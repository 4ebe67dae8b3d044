"""Model export: ``python -m pipeline.export`` writes a TorchScript network and its
preprocessing; a Python process that cannot import this repository loads it, follows
preprocessing.json on the image files and gets the pipeline's vectors; bad arguments
end with exit 2 and an ``error:`` line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tasks
from pipeline import paths
from pipeline.checkpoint import load_checkpoint
from pipeline.data.pixel_store import read_index
from pipeline.data.sources.decode import decode_image
from pipeline.embedding.embed import embed_images, load_embeddings
from pipeline.network import ModelSettings, network_from_checkpoint
from tests.support import assert_succeeded, build, fast_config

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 120  # seconds; each command ends in a few

# Run by a bare interpreter: it knows only preprocessing.json, torch, numpy and Pillow.
STANDALONE = r'''
import json, os, sys

# The venv's .pth file puts the checkout on sys.path: drop every entry that is one.
sys.path[:] = [p for p in sys.path if not os.path.isfile(os.path.join(p or os.getcwd(), "pipeline", "paths.py"))]
for name in ("pipeline", "models", "tasks"):
    try:
        __import__(name)
    except ModuleNotFoundError:
        continue
    raise SystemExit(f"{name} is still importable; the check would not be independent of the repository")

import numpy as np
import torch
from PIL import Image, ImageOps

folder, files = sys.argv[1], json.loads(sys.argv[2])
with open(os.path.join(folder, "preprocessing.json"), encoding="utf-8") as f:
    text = f.read()
pre = json.loads(text)
assert (pre["channel_order"], pre["layout"], pre["scale"]) == ("RGB", "NCHW", "uint8 / 255"), pre
size = pre["input_size"]
extra = {"preprocessing.json": ""}
model = torch.jit.load(os.path.join(folder, "model.pt"), map_location="cpu", _extra_files=extra).eval()

def pixels(path):
    """The steps preprocessing.json lists under "decode" and "resize"."""
    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft(img.mode, (size, size))
        img.load()
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
            rgba = img.convert("RGBA")
            back = Image.new("RGBA", rgba.size, tuple(pre["alpha_background"]) + (255,))
            img = Image.alpha_composite(back, rgba)
        img = img.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), getattr(Image.Resampling, pre["resize_filter"].rsplit(".", 1)[1]))
        return np.asarray(img, dtype=np.uint8)

batch = np.stack([pixels(p) for p in files]).astype(np.float32) / 255.0
x = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))
with torch.no_grad():
    vectors = model(x)
inside = extra["preprocessing.json"]  # bytes
print(json.dumps({"vectors": vectors.tolist(), "same_json_inside": inside.decode() == text,
                  "repo_modules": sorted(m for m in sys.modules if m.split(".")[0] in ("pipeline", "models"))}))
'''


def export(*args: object) -> subprocess.CompletedProcess:
    """``python -m pipeline.export ARGS`` from the repository root."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "pipeline.export", *map(str, args)], check=False, cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=TIMEOUT)


def load_standalone(folder: Path, files: list[Path], cwd: Path) -> dict:
    """Run :data:`STANDALONE` in a fresh interpreter with no PYTHONPATH, outside the repository."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONPATH="", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", STANDALONE, str(folder), json.dumps([str(f) for f in files])],
                          check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def odd_files(folder: Path) -> list[Path]:
    """Files indexing accepts that the dataset lacks: non-square, transparent, EXIF-rotated."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (24, 40, 4), dtype=np.uint8)
    rgba[:, :10, 3] = 0  # fully transparent strip: composited over the background colour
    Image.fromarray(rgba, "RGBA").save(folder / "wide-alpha.png")
    photo = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    exif = photo.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    photo.save(folder / "rotated.jpg", exif=exif, quality=90)
    return [folder / "wide-alpha.png", folder / "rotated.jpg"]


def test_export_gives_the_pipeline_vectors_without_the_repository(configure, tmp_path: Path, tiny_imagenet: Path):
    cfg = fast_config(tmp_path, tiny_imagenet)
    cfg["dataset"]["stored_size"] = 20  # 64-px JPEGs: decoded at 1/2 scale, then resized, as the JSON says
    cfg["model"]["input_size"] = 24  # so the exported graph upsamples too
    configure(cfg)
    result = build([tasks.EmbedEpoch(epoch=1)])
    assert_succeeded(result)
    root, out = tmp_path / "artifacts", tmp_path / "exported"

    done = export("--artifacts", root, "--experiment", "test", "--epoch", 1, out)
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stdout
    assert sorted(p.name for p in out.iterdir()) == [paths.EXPORT_MODEL_FILE, paths.EXPORT_PREPROCESSING_FILE]
    pre = json.loads((out / paths.EXPORT_PREPROCESSING_FILE).read_text())
    assert (pre["input_size"], pre["channels"], pre["embedding_dim"], pre["epoch"]) == (20, 3, 8, 1)
    assert pre["mean"] == [0.485, 0.456, 0.406] and pre["std"] == [0.229, 0.224, 0.225]
    assert pre["model_settings"]["input_size"] == 24 and "24 x 24" in pre["upsampling"]
    assert pre["distance"] == "unsquared Euclidean" and pre["experiment"] == "test"

    # Dataset files, against EmbedEpoch's vectors: every validation image plus the grey and CMYK training JPEGs.
    dataset = root / "datasets" / pre["dataset"]
    index = read_index(dataset).set_index("image_id")
    chosen = index[(index["split"] == "val") | index["mode"].isin(["L", "CMYK"])]
    assert set(chosen["mode"]) == {"RGB", "L", "CMYK"}
    embedded = {}
    for split in ("train", "val"):
        emb = load_embeddings(paths.embeddings_dir(root, "test", 1), split)
        embedded.update(zip(emb.image_ids.tolist(), emb.vectors))
    expected = np.stack([embedded[i] for i in chosen.index])
    # Files outside the dataset, against the pipeline's own decoding and network.
    extra = odd_files(tmp_path / "odd")
    state = load_checkpoint(paths.train_dir(root, "test", 1) / paths.CHECKPOINT_FILE)
    net = network_from_checkpoint(state, ModelSettings(**state["model_settings"]), torch.device("cpu"), "test")
    decoded = np.stack([decode_image(f, 20)[0] for f in extra])
    expected = np.concatenate([expected, embed_images(net, decoded, np.arange(len(extra)), show_bar=False)])

    files = [tiny_imagenet / p for p in chosen["path"]] + extra
    loaded = load_standalone(out, files, cwd=tmp_path)
    vectors = np.asarray(loaded["vectors"], dtype=np.float32)
    assert loaded["repo_modules"] == [] and loaded["same_json_inside"]
    assert vectors.shape == expected.shape == (len(files), 8)
    np.testing.assert_allclose(vectors, expected, rtol=0, atol=1e-4)
    assert np.ptp(expected, axis=0).max() > 1e-2  # the images differ, so agreeing means something

    # A second export refuses to overwrite, --force replaces, an untrained epoch names its command.
    before = (out / paths.EXPORT_MODEL_FILE).read_bytes()
    again = export("--artifacts", root, "--experiment", "test", "--epoch", 0, out)
    assert again.returncode == 2 and "not empty" in again.stderr and "--force" in again.stderr, again.stderr
    assert (out / paths.EXPORT_MODEL_FILE).read_bytes() == before
    forced = export("--artifacts", root, "--experiment", "test", "--epoch", 0, "--force", out)
    assert forced.returncode == 0, forced.stderr
    assert json.loads((out / paths.EXPORT_PREPROCESSING_FILE).read_text())["epoch"] == 0
    assert (out / paths.EXPORT_MODEL_FILE).read_bytes() != before
    missing = export("--artifacts", root, "--experiment", "test", "--epoch", 5, tmp_path / "five")
    assert missing.returncode == 2, missing.stderr
    assert "epoch 5 of experiment 'test' is not trained" in missing.stderr
    assert "trained epochs: 0-1" in missing.stderr
    assert "luigi --module tasks TrainEpoch --experiment test --epoch 5" in missing.stderr
    assert not (tmp_path / "five").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def fake_epoch(root: Path, content: bytes = b"not a checkpoint") -> Path:
    """An experiment ``exp`` whose epoch 0 has a checkpoint file (read only once OUT checks pass)."""
    checkpoint = paths.train_dir(root, "exp", 0) / paths.CHECKPOINT_FILE
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(content)
    return checkpoint


def _no_root(tmp: Path) -> tuple[list, list[str]]:
    return ["--artifacts", tmp / "nowhere", "--experiment", "exp", "--epoch", 0, tmp / "out"], [
        "artifacts root", "nowhere", "does not exist", "--artifacts"]


def _unknown_experiment(tmp: Path) -> tuple[list, list[str]]:
    fake_epoch(tmp / "artifacts")
    return ["--artifacts", tmp / "artifacts", "--experiment", "nope", "--epoch", 0, tmp / "out"], [
        "experiment 'nope' does not exist", "experiments there: exp"]


def _out_under_a_file(tmp: Path) -> tuple[list, list[str]]:
    fake_epoch(tmp / "artifacts")
    (tmp / "file").write_text("x")
    return ["--artifacts", tmp / "artifacts", "--experiment", "exp", "--epoch", 0, tmp / "file" / "out"], [
        f"{tmp / 'file'} is a file, not a folder"]


def _out_not_empty(tmp: Path) -> tuple[list, list[str]]:
    fake_epoch(tmp / "artifacts")
    (tmp / "out").mkdir()
    (tmp / "out" / "keep.txt").write_text("x")
    return ["--artifacts", tmp / "artifacts", "--experiment", "exp", "--epoch", 0, tmp / "out"], [
        "exists and is not empty", "--force"]


def _out_holds_the_checkpoint(tmp: Path) -> tuple[list, list[str]]:
    fake_epoch(tmp / "artifacts")
    return ["--artifacts", tmp / "artifacts", "--experiment", "exp", "--epoch", 0, "--force", tmp / "artifacts"], [
        "contains the checkpoint being exported"]


def _corrupt_checkpoint(tmp: Path) -> tuple[list, list[str]]:
    whole = tmp / "whole.pt"
    torch.save({"model": {"weight": torch.zeros(4096)}}, whole)
    checkpoint = fake_epoch(tmp / "artifacts", whole.read_bytes()[:8000])  # truncated: the zip directory is gone
    return ["--artifacts", tmp / "artifacts", "--experiment", "exp", "--epoch", 0, tmp / "out"], [
        str(checkpoint), "TrainEpoch"]


@pytest.mark.parametrize("case", [_no_root, _unknown_experiment, _out_under_a_file, _out_not_empty,
                                  _out_holds_the_checkpoint, _corrupt_checkpoint], ids=lambda c: c.__name__[1:])
def test_export_errors_exit_2_with_a_message(tmp_path: Path, case: Callable[[Path], tuple[list, list[str]]]):
    args, expected = case(tmp_path)
    done = export(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    for text in expected:
        assert text in done.stderr, (text, done.stderr)
    assert not (tmp_path / "out").exists() or (tmp_path / "out" / "keep.txt").is_file()
    assert (tmp_path / "artifacts").is_dir() or case is _no_root


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder, so permissions cannot refuse it")
def test_export_to_a_read_only_folder_exits_2(tmp_path: Path):
    fake_epoch(tmp_path / "artifacts")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        done = export("--artifacts", tmp_path / "artifacts", "--experiment", "exp", "--epoch", 0, locked / "out")
    finally:
        locked.chmod(0o755)
    assert done.returncode == 2 and f"folder {locked} is not writable" in done.stderr, done.stderr
