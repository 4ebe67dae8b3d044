"""Write small synthetic datasets for tests (a helper module, not a test file).

Every generator is deterministic from its ``seed`` and draws images that are
easy to tell apart by class -- each class has its own hue and stripe direction,
plus per-image noise -- so a nearest-neighbour search on raw pixels gets most
of them right and tests can check that a pipeline learned something.
"""

from __future__ import annotations

import colorsys
import os
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from PIL import Image

# Real Tiny ImageNet wnids (with their words.txt names), so test data looks
# like the download; more classes than listed get made-up wnids.
TINY_IMAGENET_WORDS: dict[str, str] = {
    "n01443537": "goldfish, Carassius auratus",
    "n01629819": "European fire salamander, Salamandra salamandra",
    "n01641577": "bullfrog, Rana catesbeiana",
    "n01644900": "tailed frog, bell toad, ribbed toad, tailed toad, Ascaphus trui",
    "n01698640": "American alligator, Alligator mississipiensis",
    "n01742172": "boa constrictor, Constrictor constrictor",
    "n01768244": "trilobite",
    "n01770393": "scorpion",
    "n01774384": "black widow, Latrodectus mactans",
    "n01774750": "tarantula",
}
# Unrelated WordNet entries: the real words.txt lists ~82k wnids, not just 200.
_EXTRA_WORDS: dict[str, str] = {
    "n00001740": "entity",
    "n00001930": "physical entity",
    "n00002137": "abstraction, abstract entity",
    "n02084071": "dog, domestic dog, Canis familiaris",
}


def class_image(label: int, n_classes: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB ``uint8`` image of class ``label``: its hue and stripes plus noise."""
    hue = label / max(n_classes, 1)
    # Alternate brightness too, so classes differ even once converted to grey.
    value = 0.9 if label % 2 == 0 else 0.55
    base = np.array(colorsys.hsv_to_rgb(hue, 0.8, value)) * 255.0
    angle = np.pi * label / max(n_classes, 1)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    phase = rng.uniform(0, 2 * np.pi)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * (2 * np.pi / 8) + phase)
    pixels = base[None, None, :] + 30.0 * stripes[..., None]
    pixels += rng.normal(0.0, 12.0, size=(size, size, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _save(pixels: np.ndarray, path: Path, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(pixels, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    if path.suffix.lower() in (".jpeg", ".jpg"):
        img.save(path, format="JPEG", quality=90)
    else:
        img.save(path, format="PNG")


def _box(rng: np.random.Generator, size: int) -> str:
    x0, y0 = rng.integers(0, size // 2, size=2)
    x1, y1 = rng.integers(size // 2, size, size=2)
    return f"{x0}\t{y0}\t{x1}\t{y1}"


def tiny_imagenet_wnids(n_classes: int) -> list[str]:
    """The wnids :func:`make_tiny_imagenet` uses for ``n_classes`` classes (sorted)."""
    real = list(TINY_IMAGENET_WORDS)[:n_classes]
    made_up = [f"n0990{i:04d}" for i in range(n_classes - len(real))]
    return sorted(real + made_up)


def make_tiny_imagenet(
    root: str | os.PathLike,
    n_classes: int = 3,
    train_per_class: int = 6,
    val_per_class: int = 2,
    size: int = 64,
    seed: int = 0,
    *,
    grayscale: int = 1,
    cmyk: int = 1,
) -> Path:
    """Write a miniature ``tiny-imagenet-200`` layout into ``root`` and return ``root``.

    Writes ``wnids.txt`` (shuffled, like the real file), ``words.txt`` (with
    extra unrelated wnids), ``train/<wnid>/images/<wnid>_<i>.JPEG`` plus
    ``train/<wnid>/<wnid>_boxes.txt``, ``val/images/val_<i>.JPEG`` (classes
    interleaved) with ``val/val_annotations.txt``, and two unlabelled
    ``test/images`` files. ``grayscale`` training images are saved as mode
    ``L`` and ``cmyk`` as mode ``CMYK`` JPEGs, spread over the classes. Class
    ``k`` in sorted-wnid order (= label ``k``) gets the ``k``-th hue.
    """
    if grayscale + cmyk > n_classes * train_per_class:
        raise ValueError("more grayscale + cmyk images requested than training images")
    root = Path(root)
    rng = np.random.default_rng(seed)
    wnids = tiny_imagenet_wnids(n_classes)

    # Odd modes go round-robin over classes so several classes get one.
    odd_modes: dict[tuple[int, int], str] = {}
    for j in range(grayscale + cmyk):
        odd_modes[(j % n_classes, j // n_classes)] = "L" if j < grayscale else "CMYK"

    for label, wnid in enumerate(wnids):
        boxes = []
        for i in range(train_per_class):
            name = f"{wnid}_{i}.JPEG"
            mode = odd_modes.get((label, i), "RGB")
            _save(class_image(label, n_classes, size, rng), root / "train" / wnid / "images" / name, mode)
            boxes.append(f"{name}\t{_box(rng, size)}\n")
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes), encoding="utf-8")

    val_labels = rng.permutation(np.repeat(np.arange(n_classes), val_per_class))
    annotations = []
    for i, label in enumerate(val_labels):
        name = f"val_{i}.JPEG"
        _save(class_image(int(label), n_classes, size, rng), root / "val" / "images" / name)
        annotations.append(f"{name}\t{wnids[label]}\t{_box(rng, size)}\n")
    (root / "val" / "val_annotations.txt").write_text("".join(annotations), encoding="utf-8")

    for i in range(2):
        label = i % n_classes
        _save(class_image(label, n_classes, size, rng), root / "test" / "images" / f"test_{i}.JPEG")

    shuffled = [wnids[k] for k in rng.permutation(n_classes)]
    (root / "wnids.txt").write_text("".join(f"{w}\n" for w in shuffled), encoding="utf-8")
    words = dict(_EXTRA_WORDS)
    words.update({w: TINY_IMAGENET_WORDS.get(w, f"synthetic class {w}") for w in wnids})
    (root / "words.txt").write_text(
        "".join(f"{w}\t{words[w]}\n" for w in sorted(words)), encoding="utf-8"
    )
    return root


def make_image_folder(
    root: str | os.PathLike,
    classes: Sequence[str] = ("cat", "dog", "frog"),
    train_per_class: int = 6,
    val_per_class: int = 2,
    size: int = 48,
    seed: int = 0,
) -> Path:
    """Write ``root/{train,val}/<class>/<class>_<i>.{jpg,png}`` and return ``root``.

    Images alternate between ``.jpg`` and ``.png``; the second training image
    of the first class (``<class>_1.png``) is a greyscale (mode ``L``) PNG. Class ``k`` in sorted
    order (= label ``k``) gets the ``k``-th hue.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    ordered = sorted(classes)
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for label, name in enumerate(ordered):
            for i in range(per_class):
                suffix = ".jpg" if i % 2 == 0 else ".png"
                grey = split == "train" and label == 0 and i == 1
                path = root / split / name / f"{name}_{i}{suffix}"
                _save(class_image(label, len(ordered), size, rng), path, "L" if grey else "RGB")
    return root


def corrupt_file(
    path: str | os.PathLike, kind: Literal["truncated", "zero", "garbage"] = "truncated"
) -> None:
    """Damage ``path`` in place.

    ``truncated`` keeps the first 60% (headers intact, pixel data cut short, so
    only a full decode notices); ``zero`` empties the file; ``garbage``
    replaces its bytes with deterministic random ones of the same length.
    """
    path = Path(path)
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: max(1, int(len(data) * 0.6))])
    elif kind == "zero":
        path.write_bytes(b"")
    elif kind == "garbage":
        noise = np.random.default_rng(len(data)).integers(0, 256, size=max(len(data), 64), dtype=np.uint8)
        path.write_bytes(b"\x00GARBAGE" + noise.tobytes())
    else:
        raise ValueError(f"unknown corruption kind {kind!r}; use 'truncated', 'zero' or 'garbage'")
