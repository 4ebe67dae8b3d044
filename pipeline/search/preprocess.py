"""Turn query images into the pixels a dataset image of theirs would have, and
pixels into PNG thumbnails.

A query is decoded by :func:`~pipeline.data.sources.decode.decode_image` at the
dataset's stored size, exactly as indexing decodes every dataset image (the
searcher then embeds those pixels the way validation does). Uploaded bytes are
written to a temporary file and decoded by the same function, so a file and its
bytes give identical pixels. No torch here: the command decodes (and refuses bad
files) before it loads the network.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.sources.decode import decode_image
from pipeline.errors import BadImageError

ImageInput = str | os.PathLike | bytes
UPLOAD = "upload"  # how error messages name raw bytes, which have no file name


def input_name(image: ImageInput) -> str:
    """How messages and results name a query: its path, or ``"upload"`` for raw bytes."""
    return UPLOAD if isinstance(image, (bytes, bytearray, memoryview)) else str(image)


def decode_input(image: ImageInput, size: int) -> np.ndarray:
    """uint8 ``(size, size, 3)`` RGB pixels of an image file or of raw image bytes.

    Raises :class:`BadImageError` naming the file (or "upload") when it is missing,
    empty, corrupt or not an image.
    """
    if not isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(Path(image), size)[0]
    # decode_image reads paths only; a temporary file keeps one decoder for both.
    with tempfile.NamedTemporaryFile(prefix="search-upload-") as tmp:
        tmp.write(image)
        tmp.flush()
        try:
            return decode_image(tmp.name, size)[0]
        except BadImageError as exc:
            raise BadImageError(str(exc).replace(tmp.name, UPLOAD)) from None


def decode_inputs(images: Sequence[ImageInput], size: int) -> np.ndarray:
    """uint8 ``(len(images), size, size, 3)``: :func:`decode_input` of each, in order."""
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, image in enumerate(images):
        out[i] = decode_input(image, size)
    return out


def pixels_png(pixels: np.ndarray, size: int = 96) -> bytes:
    """PNG bytes of one uint8 ``(S, S, 3)`` image scaled to ``size`` x ``size``.

    Enlarging uses nearest-neighbour so a 28-pixel image shows its real pixels
    rather than a blur; shrinking uses Lanczos.
    """
    if size < 1:
        raise ValueError(f"thumbnail size must be a positive number of pixels, got {size}")
    img = Image.fromarray(np.ascontiguousarray(pixels))
    if img.size != (size, size):
        resample = Image.Resampling.NEAREST if size >= max(img.size) else Image.Resampling.LANCZOS
        img = img.resize((size, size), resample)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()
