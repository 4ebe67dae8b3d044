"""Decode one image file into a fixed-size RGB ``uint8`` array.

Every dataset source lists paths only; this is the single place that turns a
file into pixels, so every model sees the same colour conversion and resizing
whatever the file's format or mode.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps

from pipeline.errors import BadImageError

# Bilinear with Pillow's built-in antialiasing (its filters widen their support
# when downscaling), matching torchvision's default ``Resize``.
RESAMPLE = Image.Resampling.BILINEAR

# Composited under transparent pixels: the colour a viewer shows them as, rather
# than whatever (often black) colour happens to be stored under alpha = 0.
BACKGROUND = (255, 255, 255)

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


def decode_image(path: str | os.PathLike, size: int) -> tuple[np.ndarray, tuple[int, int], str]:
    """Read ``path`` and return ``(pixels, (width, height), mode)``.

    ``pixels`` is a writable ``uint8`` array of shape ``(size, size, 3)`` in RGB
    order, squashed to a square (the aspect ratio is not kept). ``(width,
    height)`` and ``mode`` describe the file as stored, with ``(width, height)``
    as displayed (after applying an EXIF orientation tag). Raises
    :class:`BadImageError` naming the file when it is missing, empty, corrupt,
    truncated or in a colour mode that cannot be turned into RGB.
    """
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    path = Path(path)
    try:
        nbytes = path.stat().st_size
    except OSError as exc:
        raise BadImageError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    if nbytes == 0:
        raise BadImageError(f"image {path} is an empty (0-byte) file; re-download or delete it")
    # A caller that flipped this global would make truncated files decode
    # silently with grey bottoms; refuse rather than return damaged pixels.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; truncated images would go undetected")

    try:
        with Image.open(path) as img:
            mode = img.mode
            original = _displayed_size(img)
            if img.format == "JPEG":
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still
                # leaves at least ``size`` pixels per side: much faster for big
                # photos, and the antialiased resize below does the rest.
                img.draft(img.mode, (size, size))
            # Image.open is lazy; load() decodes now so corrupt or truncated
            # data fails here, inside the try, instead of later or never.
            img.load()
            # Phones store rotated pixels plus an orientation tag; apply it so
            # the model sees the picture the way people do.
            rgb = _to_rgb(ImageOps.exif_transpose(img), path)
    except (BadImageError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise many types on bad bytes
        raise BadImageError(
            f"cannot decode image {path}: {type(exc).__name__}: {exc}; "
            f"the file is corrupt, truncated or not an image (re-download or delete it)"
        ) from exc
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), RESAMPLE)
    pixels = np.array(rgb, dtype=np.uint8)
    return pixels, original, mode


def _displayed_size(img: Image.Image) -> tuple[int, int]:
    """``(width, height)`` as stored, swapped when EXIF says the image is turned 90 degrees."""
    width, height = img.size
    # EXIF orientations 5-8 are the transposed/rotated-by-90 ones.
    if img.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8):
        return height, width
    return width, height


def _to_rgb(img: Image.Image, path: Path) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        return Image.fromarray(_high_depth_to_uint8(img)).convert("RGB")
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError as exc:
        raise BadImageError(
            f"image {path} has colour mode {img.mode!r}, which cannot be converted to RGB; "
            f"re-save it as an RGB or greyscale JPEG/PNG"
        ) from exc


def _high_depth_to_uint8(img: Image.Image) -> np.ndarray:
    """Map 16-bit, 32-bit integer and float grey images onto 0..255.

    Pillow's own conversion clips at 255, which turns almost every 16-bit image
    white; scale instead, by the range the mode (or, for ``I``/``F``, the data)
    implies.
    """
    data = np.asarray(img).astype(np.float64)
    if img.mode.startswith("I;16"):
        data = data / 257.0
    elif img.mode == "I" and data.size and data.max() > 255:
        data = data / 257.0
    elif img.mode == "F" and data.size and data.max() <= 1.0:
        data = data * 255.0
    return np.clip(np.rint(data), 0, 255).astype(np.uint8)
