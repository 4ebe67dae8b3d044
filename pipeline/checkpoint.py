"""Checkpoints in torchvision's reference style: one dict with model, optimizer,
scheduler, epoch and the resolved config, written atomically.

A checkpoint holds only tensors and plain containers (dict, list, tuple, str,
int, float, bool, None), so it loads with ``torch.load(..., weights_only=True)``:
reading a checkpoint from a shared artifacts folder, or a weights file someone
sent, never unpickles (and so never runs) arbitrary code.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import PipelineError
from pipeline.storage import atomic_path, corrupt_artifact, rebuild_hint

_PLAIN = (str, int, float, bool, type(None))


def to_cpu(obj: Any) -> Any:
    """Every tensor in a nested dict/list moved to the CPU (so a checkpoint written
    on a GPU loads with a plain ``torch.load`` anywhere)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def check_plain(obj: Any, where: str = "checkpoint") -> None:
    """Raise ``TypeError`` naming the first value that is neither a tensor nor a plain container.

    Saving such a value would make the file need full unpickling to load.
    """
    if isinstance(obj, (torch.Tensor, *_PLAIN)):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, _PLAIN):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}, not a plain value")
            check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__name__}; checkpoints hold only tensors "
                    "and plain containers so that they load with weights_only=True")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` of the state (tensors on the CPU) through a temporary file renamed into place."""
    state = to_cpu(state)
    check_plain(state)
    # Serialised in memory first: torch's zip writer reports a full disk as a bare
    # RuntimeError, a plain file write as an OSError that atomic_path can explain.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


class UntrustedFileError(PipelineError):
    """A torch file that would need full unpickling (arbitrary code) to load."""


def _looks_like_torch_file(path: Path) -> bool:
    """A ``torch.save`` file: a zip archive, or a legacy one that starts as a pickle.

    Random or overwritten bytes also fail the weights-only loader; they are damage,
    not a file that needs full unpickling.
    """
    try:
        with path.open("rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return zipfile.is_zipfile(path) or head[:1] == b"\x80"


def safe_load(path: str | Path, what: str, fix: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with errors a user can act on.

    ``what`` names the file's role in messages (e.g. "checkpoint"), ``fix`` says
    what to do about a damaged one. A file that needs full unpickling (it holds
    objects other than tensors and plain containers) is refused, not loaded.
    """
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) and _looks_like_torch_file(path):
            raise UntrustedFileError(
                f"{what} {path} holds Python objects other than tensors and plain containers; loading it would "
                "run arbitrary code from the file, so it is refused. If you trust the file (e.g. a checkpoint of an "
                f"earlier version of this pipeline), convert it once: python -m pipeline.checkpoint upgrade {path}"
            ) from exc
        if "weights_only" in str(exc):  # torch's long advice is about trusted pickles, not damage
            raise PipelineError(f"{what} {path} is damaged (its bytes are not a file torch.save wrote); {fix}") from exc
        raise PipelineError(f"{what} {path} is damaged ({exc}); {fix}") from exc
    except FileNotFoundError as exc:
        raise PipelineError(f"{what} {path} does not exist; {fix}") from exc
    except Exception as exc:  # noqa: BLE001  (overwritten bytes fail in the unpickler in many ways: KeyError, ...)
        raise PipelineError(f"{what} {path} cannot be read ({type(exc).__name__}: {exc}); {fix}") from exc


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load one of the pipeline's checkpoints on the CPU (tensors are moved by the caller).

    A damaged file raises :class:`CorruptArtifactError` naming it and the task that rebuilds it.
    """
    path = Path(path)
    try:
        state = safe_load(path, "checkpoint", rebuild_hint(path))
    except UntrustedFileError:
        raise
    except PipelineError as exc:
        raise corrupt_artifact(path, str(exc.__cause__ or exc) if "weights_only" not in str(exc.__cause__)
                               else "its bytes are not a file torch.save wrote") from exc
    if not isinstance(state, dict) or "model" not in state:
        raise corrupt_artifact(path, "not one of this pipeline's checkpoints: no 'model' entry")
    return state


def upgrade(path: str | Path) -> list[str]:
    """Rewrite a trusted checkpoint or state-dict file so it loads with ``weights_only=True``.

    Loads it with full unpickling (only for files you trust), keeps every entry
    that is tensors and plain containers, drops the rest (earlier versions pickled
    the numpy and Python RNG states, which nothing reads) and writes it back
    atomically. Returns the names of the dropped entries.
    """
    path = Path(path)
    state = torch.load(path, map_location="cpu", weights_only=False)
    dropped: list[str] = []
    if isinstance(state, dict):
        kept = {}
        for key, value in state.items():
            try:
                check_plain(value)
                kept[key] = value
            except TypeError:
                dropped.append(str(key))
        state = kept
    save_checkpoint(path, state)
    return dropped


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.checkpoint upgrade FILE...``: see :func:`upgrade`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pipeline.checkpoint", description=upgrade.__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upgrade", help="rewrite trusted files so they load with weights_only=True")
    up.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for file in args.files:
        dropped = upgrade(file)
        print(f"{file}: rewritten" + (f" (dropped {', '.join(dropped)})" if dropped else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
