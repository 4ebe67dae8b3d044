"""Export one epoch's embedding network for use without this repository.

    python -m pipeline.export --experiment demo --epoch 14 [--artifacts ROOT] [--force] OUT

writes the folder ``OUT`` (atomically: a hidden sibling renamed into place) with

- ``model.pt``: the network as TorchScript, in eval mode on the CPU in float32. It
  takes float ``(B, 3, S, S)`` RGB images in [0, 1] at the dataset's stored size
  ``S`` and returns ``(B, embedding_dim)`` vectors; upsampling (if the experiment
  uses ``[model] input_size``) and ImageNet normalisation happen inside it. Load it
  with ``torch.jit.load(path)``: no code from this repository is needed.
- ``preprocessing.json``: how to turn an image file into that input exactly as
  indexing does (decoding, colour conversion, resize filter), plus the mean/std
  the model applies, the embedding length, the distance and the settings. The
  same JSON is also stored inside ``model.pt`` (``_extra_files``).

The checkpoint and OUT are checked before torch is imported, so a wrong
argument answers at once with a message that says what exists and what to run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import paths
from pipeline.data.sources.decode import BACKGROUND, RESAMPLE
from pipeline.errors import PipelineError
from pipeline.inventory import describe_epochs, experiments, trained_epochs
from pipeline.storage import atomic_path

if TYPE_CHECKING:  # torch loads only once export_model has checked its arguments
    from torch import nn

__all__ = ["ExportError", "check_out", "checkpoint_path", "describe", "export_model", "main", "recorded_dataset",
           "torchscript_bytes"]


class ExportError(PipelineError):
    """The export cannot be made: unknown experiment, untrained epoch, unusable OUT."""


# ---------------------------------------------------------------------------- where it reads and writes


def checkpoint_path(root: str | Path, experiment: str, epoch: int) -> Path:
    """Epoch ``epoch``'s checkpoint; :class:`ExportError` saying what exists and which command trains it."""
    root = Path(root)
    if epoch < 0:
        raise ExportError(f"--epoch {epoch}: epochs are numbered from 0 (the initial network)")
    if not paths.experiment_dir(root, experiment).is_dir():  # experiment_dir also rejects bad names
        if not root.is_dir():
            raise ExportError(f"artifacts root {root} does not exist; pass --artifacts ROOT, the [artifacts] root "
                              "the experiment was trained under")
        known = ", ".join(experiments(root)) or "none"
        raise ExportError(f"experiment {experiment!r} does not exist under {root} (experiments there: {known}); "
                          "check --experiment and --artifacts")
    checkpoint = paths.train_dir(root, experiment, epoch) / paths.CHECKPOINT_FILE
    if not checkpoint.is_file():
        trained = describe_epochs(trained_epochs(root, experiment))
        partial = paths.partial_checkpoint(checkpoint.parent)
        resumes = f" (it continues the interrupted run saved in {partial})" if partial.is_file() else ""
        raise ExportError(f"epoch {epoch} of experiment {experiment!r} is not trained: {checkpoint} does not exist "
                          f"(trained epochs: {trained}). Train it with: luigi --module tasks TrainEpoch "
                          f"--experiment {experiment} --epoch {epoch}{resumes}")
    return checkpoint


def check_out(out: Path, force: bool, checkpoint: Path) -> None:
    """Refuse an ``out`` that cannot be written, is not empty (without ``force``) or holds ``checkpoint``."""
    real, held = out.resolve(), checkpoint.resolve()  # --force on a folder above the artifacts would delete them
    if real == held or real in held.parents:
        raise ExportError(f"OUT {out} contains the checkpoint being exported ({checkpoint}); choose another folder")
    if out.is_symlink() or out.exists():
        if not out.is_dir() or out.is_symlink():
            raise ExportError(f"OUT {out} exists and is not a folder; choose another OUT")
        if not force and any(out.iterdir()):
            raise ExportError(f"OUT {out} exists and is not empty; pass --force to replace it, or choose another OUT")
    # The new folder is made as a sibling of OUT, so the nearest existing folder above it must take writes.
    base = out.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise ExportError(f"cannot create OUT {out}: {base} is a file, not a folder; choose another OUT")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ExportError(f"cannot create OUT {out}: folder {base} is not writable by this user; "
                          "choose another OUT or make that folder writable")


# ---------------------------------------------------------------------------- preprocessing.json

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

    ``model_settings`` are the checkpoint's (``pipeline.network.ModelSettings``
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


# ---------------------------------------------------------------------------- tracing and writing


def torchscript_bytes(net: nn.Module, size: int, extra_files: dict[str, str]) -> bytes:
    """``net`` traced to TorchScript at ``(B, 3, size, size)``, checked on another batch size, serialised
    (with ``extra_files`` stored inside)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    example = torch.rand(2, 3, size, size, generator=generator)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # Expected here: torch marks TorchScript deprecated (FutureWarning), and the
        # network's shape checks (grey input? upsample?) become trace constants
        # (TracerWarning), which is right because the input shape is fixed but for B.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        module = torch.jit.trace(net, example)
        probe = torch.rand(3, 3, size, size, generator=generator)
        gap = (module(probe) - net(probe)).abs().max().item()
        if not gap <= 1e-5:
            raise RuntimeError(f"the traced network differs from the original by {gap} on a batch of 3")
        torch.jit.save(module, buffer, _extra_files=extra_files)
    return buffer.getvalue()


def export_model(root: str | Path, experiment: str, epoch: int, out: str | Path, *, force: bool = False) -> dict:
    """Write ``model.pt`` and ``preprocessing.json`` into ``out`` (see :mod:`pipeline.export`); return the JSON.

    Raises :class:`ExportError` (or another
    :class:`~pipeline.errors.PipelineError`, e.g. for a damaged checkpoint) with a
    message naming what is wrong; ``out`` is then left as it was.
    """
    root, out = Path(root), Path(out).absolute()
    checkpoint = checkpoint_path(root, experiment, epoch).absolute()
    check_out(out, force, checkpoint)
    # Imported here so that the argument errors above answer before torch loads.
    import torch

    from pipeline.checkpoint import load_checkpoint
    from pipeline.data.settings import IndexSettings
    from pipeline.network import ModelSettings, network_from_checkpoint
    from pipeline.settings import significant

    state = load_checkpoint(checkpoint)
    model_settings = ModelSettings(**state["model_settings"])
    net = network_from_checkpoint(state, model_settings, torch.device("cpu"),
                                  f"epoch {epoch} of experiment {experiment!r}").float().eval()
    known = significant(IndexSettings())
    dataset = IndexSettings(**{k: v for k, v in recorded_dataset(state, root, experiment).items() if k in known})
    size = dataset.resolved_size()
    meta = describe(size=size, model_settings=state["model_settings"], mean=net.mean.flatten().tolist(),
                    std=net.std.flatten().tolist(), experiment=experiment, epoch=epoch, dataset=dataset.key(),
                    torch_version=torch.__version__)
    text = json.dumps(meta, indent=2) + "\n"
    # Serialised in memory first, so that a full disk surfaces as an OSError of the write below.
    model = torchscript_bytes(net, size, {paths.EXPORT_PREPROCESSING_FILE: text})
    with atomic_path(out, is_dir=True) as tmp:
        (tmp / paths.EXPORT_MODEL_FILE).write_bytes(model)
        (tmp / paths.EXPORT_PREPROCESSING_FILE).write_text(text, encoding="utf-8")
    return meta


# ---------------------------------------------------------------------------- the command


def main(argv: list[str] | None = None) -> int:
    """Run the export; print what was written, or `error: ...` on stderr and return 2."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.export",
                                     description="Export an epoch's embedding network as TorchScript plus "
                                                 "preprocessing.json.")
    parser.add_argument("--experiment", required=True, help="experiment name (folder under the artifacts root)")
    parser.add_argument("--epoch", type=int, required=True, help="trained epoch to export (0 = initial network)")
    parser.add_argument("--artifacts", default="artifacts", help="artifacts root (default: artifacts)")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists and is not empty")
    parser.add_argument("out", metavar="OUT", type=Path, help="folder to write model.pt and preprocessing.json to")
    args = parser.parse_args(argv)
    try:
        meta = export_model(args.artifacts, args.experiment, args.epoch, args.out, force=args.force)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported epoch {args.epoch} of experiment {args.experiment!r} to {args.out}: "
          f"{paths.EXPORT_MODEL_FILE} ({meta['model_settings']['arch']}, {meta['embedding_dim']}-d, input "
          f"{meta['input_size']}x{meta['input_size']} RGB in [0, 1]) and {paths.EXPORT_PREPROCESSING_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
