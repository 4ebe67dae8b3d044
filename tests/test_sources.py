"""Dataset sources: listing Tiny ImageNet / ImageFolder trees and decoding images."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFile

from pipeline.data.sources.decode import decode_image
from pipeline.data.sources.fashion_mnist import FILES, load_fashion_mnist
from pipeline.data.sources.image_folder import list_image_folder
from pipeline.data.sources.base import SourceListing, make_classes
from pipeline.data.sources.tiny_imagenet import list_tiny_imagenet
from pipeline.errors import BadImageError, DatasetLayoutError
from tests.datagen import class_image, corrupt_file, make_image_folder, make_tiny_imagenet

# --------------------------------------------------------------------------- helpers


def _check_listing_shape(listing: SourceListing) -> None:
    """Invariants every source promises, whatever the dataset."""
    records, classes = listing.records, listing.classes
    assert list(records.columns) == ["split", "class_id", "path"]
    assert list(classes.columns) == ["label", "class_id", "class_name"]
    assert classes["label"].dtype == np.int64
    assert classes["label"].tolist() == list(range(len(classes)))
    assert classes["class_id"].tolist() == sorted(classes["class_id"])
    assert set(records["split"]) <= {"train", "val"}
    assert set(records["class_id"]) <= set(classes["class_id"])
    keys = list(zip(records["split"], records["class_id"], records["path"]))
    assert keys == sorted(keys)
    assert records["path"].is_unique
    for rel in records["path"]:
        assert not rel.startswith("/") and "\\" not in rel and ".." not in rel.split("/")
        assert (listing.root / rel).is_file()


def _error(exc_type: type[Exception], fn, *args) -> str:
    with pytest.raises(exc_type) as info:
        fn(*args)
    return str(info.value)


# --------------------------------------------------------------------------- Tiny ImageNet


@pytest.fixture(scope="module")
def tin_template(tmp_path_factory) -> Path:
    return make_tiny_imagenet(tmp_path_factory.mktemp("tin") / "tiny-imagenet-200")


@pytest.fixture
def tin(tin_template, tmp_path) -> Path:
    """A private copy, so tests may break it."""
    return Path(shutil.copytree(tin_template, tmp_path / "tiny-imagenet-200"))


def test_tiny_imagenet_lists_train_and_val_with_names(tin_template):
    listing = list_tiny_imagenet(tin_template)
    _check_listing_shape(listing)
    recs, classes = listing.records, listing.classes
    assert listing.root == tin_template
    assert (recs["split"] == "train").sum() == 3 * 6
    assert (recs["split"] == "val").sum() == 3 * 2
    assert classes["class_id"].tolist() == ["n01443537", "n01629819", "n01641577"]
    # First of the comma-separated names from words.txt.
    assert classes["class_name"].tolist() == ["goldfish", "European fire salamander", "bullfrog"]
    # Nothing from test/ (unlabelled) or the *_boxes.txt files.
    assert recs["path"].str.match(r"^(train/n\d{8}/images|val/images)/[^/]+\.JPEG$").all()
    train = recs[recs["split"] == "train"]
    assert (train["path"].str.split("/").str[1] == train["class_id"]).all()


def test_tiny_imagenet_val_labels_come_from_annotations(tin_template):
    listing = list_tiny_imagenet(tin_template)
    ann = pd.read_csv(tin_template / "val" / "val_annotations.txt", sep="\t", header=None)
    expected = {f"val/images/{name}": wnid for name, wnid in zip(ann[0], ann[1])}
    val = listing.records[listing.records["split"] == "val"]
    assert dict(zip(val["path"], val["class_id"])) == expected


def test_tiny_imagenet_listing_is_deterministic_and_ignores_wnids_order(tin):
    first = list_tiny_imagenet(tin)
    wnids = (tin / "wnids.txt").read_text().split()
    (tin / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n\n")
    second = list_tiny_imagenet(tin)
    pd.testing.assert_frame_equal(first.records, second.records)
    pd.testing.assert_frame_equal(first.classes, second.classes)


def test_tiny_imagenet_names_fall_back_to_wnid(tin):
    lines = (tin / "words.txt").read_text().splitlines()
    (tin / "words.txt").write_text("\n".join(l for l in lines if not l.startswith("n01629819")) + "\n")
    names = list_tiny_imagenet(tin).classes.set_index("class_id")["class_name"]
    assert names["n01629819"] == "n01629819"
    assert names["n01443537"] == "goldfish"
    (tin / "words.txt").unlink()
    classes = list_tiny_imagenet(tin).classes
    assert classes["class_name"].tolist() == classes["class_id"].tolist()


def test_tiny_imagenet_accepts_image_suffixes_in_any_case(tin):
    images = tin / "train" / "n01443537" / "images"
    for name in ("extra.jpg", "extra2.jpeg", "extra3.PNG"):
        Image.new("RGB", (8, 8)).save(images / name, format="PNG" if name.endswith("PNG") else "JPEG")
    (images / "notes.txt").write_text("not an image")
    (images / ".hidden.JPEG").write_bytes(b"")
    paths = set(list_tiny_imagenet(tin).records["path"])
    for name in ("extra.jpg", "extra2.jpeg", "extra3.PNG"):
        assert f"train/n01443537/images/{name}" in paths
    assert not any(p.endswith(("notes.txt", ".hidden.JPEG")) for p in paths)


def _rewrite_annotations(tin: Path, first_line: str) -> Path:
    ann = tin / "val" / "val_annotations.txt"
    lines = ann.read_text().splitlines()
    ann.write_text("\n".join([first_line] + lines[1:]) + "\n")
    return ann


def test_tiny_imagenet_missing_root(tmp_path):
    root = tmp_path / "nowhere"
    assert str(root) in _error(DatasetLayoutError, list_tiny_imagenet, root)


def test_tiny_imagenet_missing_wnids_hints_at_subfolder(tin):
    msg = _error(DatasetLayoutError, list_tiny_imagenet, tin.parent)
    assert str(tin.parent / "wnids.txt") in msg and "did you mean" in msg
    (tin / "wnids.txt").unlink()
    msg = _error(DatasetLayoutError, list_tiny_imagenet, tin)
    assert str(tin / "wnids.txt") in msg and "train/<wnid>/images" in msg


def test_tiny_imagenet_missing_annotations(tin):
    (tin / "val" / "val_annotations.txt").unlink()
    msg = _error(DatasetLayoutError, list_tiny_imagenet, tin)
    assert str(tin / "val" / "val_annotations.txt") in msg


def test_tiny_imagenet_missing_or_empty_train_folder(tin):
    folder = tin / "train" / "n01629819" / "images"
    for image in folder.iterdir():
        image.unlink()
    msg = _error(DatasetLayoutError, list_tiny_imagenet, tin)
    assert str(folder) in msg and "no images" in msg
    shutil.rmtree(tin / "train" / "n01629819")
    msg = _error(DatasetLayoutError, list_tiny_imagenet, tin)
    assert str(folder) in msg and "n01629819" in msg


def test_tiny_imagenet_annotation_for_missing_file(tin):
    _rewrite_annotations(tin, "val_999.JPEG\tn01443537\t0\t0\t10\t10")
    msg = _error(DatasetLayoutError, list_tiny_imagenet, tin)
    assert str(tin / "val" / "images" / "val_999.JPEG") in msg


def test_tiny_imagenet_annotation_with_unknown_class(tin):
    ann = _rewrite_annotations(tin, "val_0.JPEG\tn09999999\t0\t0\t10\t10")
    msg = _error(DatasetLayoutError, list_tiny_imagenet, tin)
    assert f"{ann} line 1" in msg and "n09999999" in msg


@pytest.mark.parametrize(
    "name", ["/etc/passwd", "../../wnids.txt", "sub/../../x.JPEG", "..\\..\\x.JPEG", "C:\\x.JPEG"]
)
def test_tiny_imagenet_annotation_escaping_root_is_rejected(tin, name):
    # ../../wnids.txt exists, so only the path check (not "file missing") stops it.
    ann = _rewrite_annotations(tin, f"{name}\tn01443537\t0\t0\t10\t10")
    msg = _error(DatasetLayoutError, list_tiny_imagenet, tin)
    assert f"{ann} line 1" in msg and name in msg


@pytest.mark.parametrize("wnid", ["../../etc", "/abs", "n01/images", "..", ".", "sub\\..\\x", "C:x"])
def test_tiny_imagenet_wnid_escaping_train_is_rejected(tin, wnid):
    # A wnid becomes the folder train/<wnid>/images; it must not point anywhere else.
    wnids = tin / "wnids.txt"
    lines = wnids.read_text().splitlines()
    wnids.write_text("\n".join(lines[:1] + ["", wnid] + lines[1:]) + "\n")
    msg = _error(DatasetLayoutError, list_tiny_imagenet, tin)
    # Line 3: the blank line 2 still counts, so the number matches an editor's.
    assert f"{wnids} line 3" in msg and repr(wnid) in msg and "plain wnid" in msg


def test_tiny_imagenet_wnid_traversal_to_real_folder_is_rejected(tin):
    # ../../<copy>/train/<wnid> exists, so only the name check (not "missing folder") stops it.
    (tin / "wnids.txt").write_text(f"../../{tin.name}/train/n01443537\n")
    assert "path separator" in _error(DatasetLayoutError, list_tiny_imagenet, tin)


def test_tiny_imagenet_malformed_annotation_line(tin):
    ann = _rewrite_annotations(tin, "val_0.JPEG")
    assert f"{ann} line 1" in _error(DatasetLayoutError, list_tiny_imagenet, tin)


def test_tiny_imagenet_odd_modes_decode_to_rgb(tin_template):
    listing = list_tiny_imagenet(tin_template)
    modes = {}
    for rel in listing.records["path"]:
        pixels, original, mode = decode_image(tin_template / rel, 32)
        assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
        assert original == (64, 64)
        modes[rel] = mode
    assert sorted(modes.values()).count("L") == 1
    assert sorted(modes.values()).count("CMYK") == 1


# --------------------------------------------------------------------------- ImageFolder


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "pets")


def test_image_folder_lists_splits_and_classes(folder):
    listing = list_image_folder(folder)
    _check_listing_shape(listing)
    recs, classes = listing.records, listing.classes
    assert classes["class_id"].tolist() == ["cat", "dog", "frog"]
    assert classes["class_name"].tolist() == ["cat", "dog", "frog"]
    assert recs.groupby("split").size().to_dict() == {"train": 18, "val": 6}
    assert {Path(p).suffix for p in recs["path"]} == {".jpg", ".png"}
    assert recs["path"].str.match(r"^(train|val)/(cat|dog|frog)/").all()
    only_train = list_image_folder(folder, splits=("train",))
    assert set(only_train.records["split"]) == {"train"}


def test_image_folder_recurses_skips_hidden_and_matches_suffix_case(folder):
    nested = folder / "train" / "dog" / "more" / "deeper"
    nested.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(nested / "x.JPG", format="JPEG")
    Image.new("RGB", (8, 8)).save(nested / "y.WebP", format="WEBP")
    (folder / "train" / "dog" / ".thumbs").mkdir()
    Image.new("RGB", (8, 8)).save(folder / "train" / "dog" / ".thumbs" / "t.jpg")
    Image.new("RGB", (8, 8)).save(folder / "train" / "dog" / ".t.jpg", format="JPEG")
    (folder / "train" / "dog" / "labels.csv").write_text("a,b\n")
    (folder / "train" / ".cache").mkdir()
    paths = set(list_image_folder(folder).records["path"])
    assert "train/dog/more/deeper/x.JPG" in paths
    assert "train/dog/more/deeper/y.WebP" in paths
    assert not any(".thumbs" in p or "/.t.jpg" in p or p.endswith(".csv") for p in paths)


def test_image_folder_missing_root_or_split(tmp_path, folder):
    assert str(tmp_path / "nope") in _error(DatasetLayoutError, list_image_folder, tmp_path / "nope")
    shutil.rmtree(folder / "val")
    assert str(folder / "val") in _error(DatasetLayoutError, list_image_folder, folder)


@pytest.mark.parametrize("split", ["train", "val"])
def test_image_folder_empty_class_folder(folder, split):
    empty = folder / split / "dog"
    shutil.rmtree(empty)
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.txt").write_text("no images here")
    msg = _error(DatasetLayoutError, list_image_folder, folder)
    assert str(empty) in msg and "no images" in msg


def test_image_folder_val_class_missing_from_train(folder):
    stray = folder / "val" / "hamster"
    stray.mkdir()
    Image.new("RGB", (8, 8)).save(stray / "h.png")
    msg = _error(DatasetLayoutError, list_image_folder, folder)
    assert str(stray) in msg


# --------------------------------------------------------------------------- Fashion-MNIST


def _write_idx(path: Path, array: np.ndarray, type_code: int = 0x08) -> None:
    """Write ``array`` as a gzipped idx file (type 0x08 = uint8, 0x09 = int8)."""
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    dtype = np.uint8 if type_code == 0x08 else np.int8
    path.write_bytes(gzip.compress(header + np.ascontiguousarray(array, dtype=dtype).tobytes()))


def _fashion(root: Path, train_labels: np.ndarray, type_code: int = 0x08) -> Path:
    """Four small idx files: ``train_labels`` for training, labels 0..9 for validation."""
    root.mkdir(parents=True)
    val_labels = np.arange(10)
    for (_, img_stem, lbl_stem), labels in zip(FILES, (train_labels, val_labels)):
        _write_idx(root / f"{img_stem}.gz", np.zeros((len(labels), 4, 4), np.uint8))
        _write_idx(root / f"{lbl_stem}.gz", labels, type_code)
    return root


def test_fashion_mnist_loads_valid_labels(tmp_path):
    splits = load_fashion_mnist(_fashion(tmp_path / "fm", np.array([0, 9, 3])))
    assert splits["train"].labels.tolist() == [0, 9, 3]
    assert splits["train"].labels.dtype == np.int64


@pytest.mark.parametrize("bad, type_code", [(10, 0x08), (255, 0x08), (-1, 0x09)])
def test_fashion_mnist_label_out_of_range(tmp_path, bad, type_code):
    root = _fashion(tmp_path / "fm", np.array([0, 1, bad, 2, bad]), type_code)
    msg = _error(DatasetLayoutError, load_fashion_mnist, root)
    labels_file = root / "train-labels-idx1-ubyte.gz"
    assert str(labels_file) in msg
    assert f"label {bad} at position 2" in msg and "2 such label(s)" in msg and "0..9" in msg


# --------------------------------------------------------------------------- decoding


def _save(tmp_path: Path, img: Image.Image, name: str, **kw) -> Path:
    path = tmp_path / name
    img.save(path, **kw)
    return path


def _rgb(size: int = 40) -> Image.Image:
    return Image.fromarray(class_image(1, 3, size, np.random.default_rng(0)))


@pytest.mark.parametrize(
    "mode, suffix",
    [("RGB", ".jpg"), ("L", ".jpg"), ("CMYK", ".jpg"), ("L", ".png"), ("LA", ".png"), ("P", ".png"),
     ("RGBA", ".png"), ("1", ".png"), ("I;16", ".png"), ("I", ".tif"), ("F", ".tif")],
)
def test_decode_converts_every_mode_to_rgb(tmp_path, mode, suffix):
    source = _rgb(40).convert("L" if mode in ("I;16", "I", "F") else "RGB")
    img = source.convert(mode) if mode not in ("I;16", "I", "F") else Image.fromarray(
        np.asarray(source).astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode])
        * {"I;16": 257, "I": 257, "F": 1 / 255}[mode]
    )
    path = _save(tmp_path, img, f"img{suffix}")
    pixels, original, stored_mode = decode_image(path, 24)
    assert pixels.shape == (24, 24, 3) and pixels.dtype == np.uint8
    assert original == (40, 40)
    assert stored_mode == Image.open(path).mode
    # Scaled, not clipped: a 16-bit / float grey image keeps its mid-tones.
    if mode in ("I;16", "I", "F"):
        expected = np.asarray(source.resize((24, 24), Image.Resampling.BILINEAR))
        assert np.abs(pixels[..., 0].astype(int) - expected).max() <= 2


def test_decode_cmyk_keeps_colours(tmp_path):
    rgb = _rgb(40)
    a, _, _ = decode_image(_save(tmp_path, rgb, "rgb.jpg", quality=95), 40)
    b, _, mode = decode_image(_save(tmp_path, rgb.convert("CMYK"), "cmyk.jpg", quality=95), 40)
    assert mode == "CMYK"
    # Same colours (not inverted channels), up to JPEG noise.
    assert np.abs(a.mean(axis=(0, 1)) - b.mean(axis=(0, 1))).max() < 5


def test_decode_transparent_pixels_become_white(tmp_path):
    img = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    pixels, _, mode = decode_image(_save(tmp_path, img, "clear.png"), 10)
    assert mode == "RGBA" and (pixels == 255).all()
    pal = Image.new("P", (10, 10), 0)
    pal.putpalette([0, 0, 0, 200, 10, 10])
    pal.putpixel((0, 0), 1)
    pixels, _, _ = decode_image(_save(tmp_path, pal, "pal.png", transparency=0), 10)
    assert tuple(pixels[0, 0]) == (200, 10, 10) and (pixels[5, 5] == 255).all()


def test_decode_same_size_is_lossless(tmp_path):
    arr = class_image(0, 3, 16, np.random.default_rng(1))
    pixels, _, _ = decode_image(_save(tmp_path, Image.fromarray(arr), "x.png"), 16)
    np.testing.assert_array_equal(pixels, arr)
    assert pixels.flags.writeable  # callers may normalise in place


def test_decode_large_jpeg_downscales_and_reports_stored_size(tmp_path):
    img = Image.new("RGB", (500, 300), (30, 120, 220))
    pixels, original, _ = decode_image(_save(tmp_path, img, "big.jpg", quality=95), 32)
    assert original == (500, 300)
    assert pixels.shape == (32, 32, 3)
    assert np.abs(pixels.astype(int) - [30, 120, 220]).max() <= 4


def test_decode_applies_exif_orientation(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    pixels, original, _ = decode_image(_save(tmp_path, img, "phone.jpg", exif=exif, quality=95), 20)
    assert original == (20, 40)
    # Displayed: stored left edge (red) is at the top.
    assert pixels[2, 10, 0] > 200 and pixels[-3, 10, 2] > 200


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
@pytest.mark.parametrize("kind", ["zero", "truncated", "garbage"])
def test_decode_rejects_damaged_files(tmp_path, kind, suffix):
    path = _save(tmp_path, _rgb(64), f"bad{suffix}")
    corrupt_file(path, kind)
    msg = _error(BadImageError, decode_image, path, 32)
    assert str(path) in msg
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_decode_missing_file(tmp_path):
    path = tmp_path / "gone.jpg"
    assert str(path) in _error(BadImageError, decode_image, path, 32)


def test_make_classes_dense_sorted_with_fallback_names():
    classes = make_classes(["b", "a", "c", "a"], {"a": "apple", "c": ""})
    assert classes["label"].tolist() == [0, 1, 2]
    assert classes["class_id"].tolist() == ["a", "b", "c"]
    assert classes["class_name"].tolist() == ["apple", "b", "c"]
