"""``preprocessing.json``: what a user outside this repository must do to an image
file to feed the exported network, and what the network does itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.data.sources.decode import BACKGROUND, RESAMPLE
from pipeline.export.locations import ExportError

# How pipeline.data.sources.decode.decode_image turns a file into pixels, for a
# reader without this code. test_export follows these words and must match.
DECODE_STEPS = [
    ("open the file with Pillow; for a JPEG call img.draft(img.mode, (input_size, input_size)) before decoding "
     "(libjpeg then decodes at the strongest reduction of 1/8, 1/4 or 1/2 that keeps both sides >= input_size)"),
    "apply the EXIF orientation tag: PIL.ImageOps.exif_transpose(img)",
    ("convert to 8-bit RGB: images with alpha (RGBA, LA, PA, or a transparency key) are composited over "
     "alpha_background first; 16-bit greys (and 32-bit ones above 255) are divided by 257 and rounded, float greys "
     "in [0, 1] multiplied by 255; other modes use img.convert('RGB')"),
]
RESIZE = ("squash to input_size x input_size (aspect ratio not kept) with img.resize((input_size, input_size), "
          f"PIL.Image.Resampling.{RESAMPLE.name}), which in Pillow widens its support (antialiases) when downscaling; "
          "skipped when the image already has that size; as in pipeline.data.sources.decode")


def recorded_dataset(state: dict[str, Any], root: Path, experiment: str) -> dict[str, Any]:
    """The ``[dataset]`` settings the checkpoint was trained on (else the experiment's recorded config)."""
    recorded = (state.get("config") or {}).get("dataset")
    config = paths.config_file(root, experiment)
    if not recorded and config.is_file():
        recorded = json.loads(config.read_text()).get("dataset")
    if not recorded:
        raise ExportError(f"neither the checkpoint nor {config} records the [dataset] settings, so the stored "
                          "image size is unknown; retrain the epoch with this version of the pipeline")
    return recorded


def describe(*, size: int, model_settings: dict[str, Any], mean: list[float], std: list[float], experiment: str,
             epoch: int, dataset: str, torch_version: str) -> dict[str, Any]:
    """The content of ``preprocessing.json`` for a network taking ``size`` x ``size`` images.

    ``model_settings`` are the checkpoint's (``models.embedding_net.ModelSettings``
    fields); ``mean``/``std`` the normalisation the network applies inside.
    """
    upsample = model_settings["input_size"]
    return {
        "format": "TorchScript (torch.jit.load); input float32 (B, 3, input_size, input_size) in [0, 1], "
                  "output float32 (B, embedding_dim)",
        "input_size": size, "channels": 3, "channel_order": "RGB", "layout": "NCHW", "dtype": "float32",
        "scale": "uint8 / 255",
        "decode": DECODE_STEPS, "alpha_background": list(BACKGROUND), "resize": RESIZE,
        "resize_filter": f"PIL.Image.Resampling.{RESAMPLE.name}",
        "normalization": "done inside the model: ImageNet mean/std, (x - mean) / std per channel",
        "mean": [round(v, 6) for v in mean], "std": [round(v, 6) for v in std],
        "upsampling": (f"done inside the model: bilinear (align_corners=False, no antialiasing) to {upsample} x "
                       f"{upsample} before normalisation") if upsample and upsample != size else "none",
        "embedding_dim": model_settings["embedding_dim"],
        "l2_normalized": model_settings["normalize"],
        "distance": "unsquared Euclidean",
        "experiment": experiment, "epoch": epoch, "dataset": dataset,
        "model_settings": dict(model_settings), "torch_version": torch_version,
    }
