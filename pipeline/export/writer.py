"""Trace an epoch's network to TorchScript and write the export folder atomically."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import paths
from pipeline.atomic import atomic_path
from pipeline.export.locations import check_out, checkpoint_path
from pipeline.export.preprocessing import describe, recorded_dataset

if TYPE_CHECKING:  # torch loads only once export_model has checked its arguments
    from torch import nn


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

    Raises :class:`~pipeline.export.ExportError` (or another
    :class:`~pipeline.errors.PipelineError`, e.g. for a damaged checkpoint) with a
    message naming what is wrong; ``out`` is then left as it was.
    """
    root, out = Path(root), Path(out).absolute()
    checkpoint = checkpoint_path(root, experiment, epoch).absolute()
    check_out(out, force, checkpoint)
    # Imported here so that the argument errors above answer before torch loads.
    import torch

    from models.embedding_net import ModelSettings, network_from_checkpoint
    from pipeline.checkpoint import load_checkpoint
    from pipeline.data.indexing import IndexSettings
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
