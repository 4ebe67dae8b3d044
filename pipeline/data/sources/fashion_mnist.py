"""Fashion-MNIST from its original idx files, and the compact subset shipped in
this repository (``data/fashion-mnist-embedded``), which uses the same format.

Two sources: ``embedded`` reads only the shipped subset (a ``[dataset] root``
is refused, as it would be ignored), and ``fashion-mnist`` reads the idx files
in ``root``, by default where Debian's ``dataset-fashion-mnist`` package puts
them, ``/usr/share/datasets/fashion-mnist`` (Expat licence, Zalando SE).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.sources.base import ArraySource, ArraySplit, register_source
from pipeline.errors import DatasetLayoutError

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: (split, images file, labels file); Fashion-MNIST's test set is our validation split.
FILES = (
    ("train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("val", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
)

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
EMBEDDED_DIR = Path(__file__).resolve().parents[3] / "data" / "fashion-mnist-embedded"

_DTYPES: dict[int, Any] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise DatasetLayoutError(
        f"Fashion-MNIST file {root / (stem + '.gz')} not found; the folder must hold the four idx "
        "files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
        "t10k-labels-idx1-ubyte[.gz]), e.g. from Debian's dataset-fashion-mnist package"
    )


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (optionally gzipped) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DatasetLayoutError(f"cannot read idx file {path}: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DatasetLayoutError(f"{path} is not an idx file (bad magic number)")
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    dtype = np.dtype(_DTYPES[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = data[4 + 4 * ndim :]
    if len(body) != expected:
        raise DatasetLayoutError(
            f"{path} is truncated or padded: header says {dims} ({expected} bytes), file has {len(body)}"
        )
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def load_fashion_mnist(root: str | Path) -> dict[str, ArraySplit]:
    """Load both splits from a folder of Fashion-MNIST idx files.

    Raises :class:`DatasetLayoutError` naming the file when one is missing,
    is not a valid idx file, or holds a label outside 0..9.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(
            f"Fashion-MNIST folder {root} does not exist; set [dataset] root to a folder with the idx files "
            f"(Debian: apt-get install dataset-fashion-mnist puts them in {DEBIAN_DIR})"
        )
    splits = {}
    for split, img_stem, lbl_stem in FILES:
        images = read_idx(_find(root, img_stem))
        labels_path = _find(root, lbl_stem)
        labels = _check_labels(read_idx(labels_path), labels_path)
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DatasetLayoutError(
                f"{root}: {split} images {images.shape} and labels {labels.shape} do not match"
            )
        splits[split] = ArraySplit(images=images, labels=labels)
    return splits


def _check_labels(raw: np.ndarray, path: Path) -> np.ndarray:
    """``raw`` as int64 labels, refusing values that name no Fashion-MNIST class.

    Labels index :data:`CLASS_NAMES` later (and a negative one would silently
    wrap around), so a damaged or foreign labels file is stopped here, naming
    the file and the first bad entry, rather than as an ``IndexError`` deep in
    indexing.
    """
    last = len(CLASS_NAMES) - 1
    expected = (
        f"expected one class number 0..{last} per image (0 = {CLASS_NAMES[0]}, ..., {last} = {CLASS_NAMES[last]}), "
        "as in the original Fashion-MNIST idx files; replace the file with the original download"
    )
    if raw.ndim != 1:
        # Shape mismatches are reported with the images by the caller; only
        # the values need checking here.
        return raw.astype(np.int64)
    if not np.issubdtype(raw.dtype, np.integer):
        raise DatasetLayoutError(f"labels file {path} holds {raw.dtype} values, not integers; {expected}")
    labels = raw.astype(np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= len(CLASS_NAMES)))
    if bad.size:
        first = int(bad[0])
        raise DatasetLayoutError(
            f"labels file {path} has label {int(labels[first])} at position {first} (0-based), "
            f"outside 0..{last} ({bad.size} such label(s) in all); {expected}"
        )
    return labels


# Run as a script (``python -m``, below), this file is __main__ and the package import
# above has already registered its sources under the module's own name.
if __name__ != "__main__":
    register_source(ArraySource(name="embedded", native_size=28, load=load_fashion_mnist, class_names=CLASS_NAMES,
                                root_use="unused", default_root=EMBEDDED_DIR))
    register_source(ArraySource(name="fashion-mnist", native_size=28, load=load_fashion_mnist,
                                class_names=CLASS_NAMES, root_use="optional", default_root=DEBIAN_DIR))


def stratified_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of ``per_class`` images of every class, drawn without replacement."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in np.unique(labels)]
    return np.sort(np.concatenate(picks))


def _write_idx_gz(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    # mtime=0 makes the committed files byte-identical on every rebuild.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def build_embedded(
    source: str | Path = DEBIAN_DIR,
    out: str | Path = EMBEDDED_DIR,
    *,
    train_per_class: int = 600,
    val_per_class: int = 100,
    seed: int = 0,
) -> Path:
    """Write the stratified fixed-seed subset shipped as the default dataset."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    splits = load_fashion_mnist(source)
    for (split, img_stem, lbl_stem), per_class in zip(FILES, (train_per_class, val_per_class)):
        s = splits[split]
        keep = stratified_subset(s.labels, per_class, seed)
        _write_idx_gz(out / f"{img_stem}.gz", s.images[keep])
        _write_idx_gz(out / f"{lbl_stem}.gz", s.labels[keep].astype(np.uint8))
    return out


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Rebuild the embedded Fashion-MNIST subset.")
    parser.add_argument("--source", default=str(DEBIAN_DIR))
    parser.add_argument("--out", default=str(EMBEDDED_DIR))
    parser.add_argument("--train-per-class", type=int, default=600)
    parser.add_argument("--val-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()
    print(build_embedded(a.source, a.out, train_per_class=a.train_per_class, val_per_class=a.val_per_class, seed=a.seed))
