"""Device choice, done lazily inside task ``run()`` methods (never at import or in
the Luigi scheduling process, so forked workers never inherit a CUDA context).

torch itself is imported by the functions, so that :class:`ComputeSettings`
costs nothing to import while Luigi declares task parameters."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.errors import ConfigError
from pipeline.settings import setting

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ComputeSettings:
    """``[compute]``: where training and embedding run (run-only: no output depends on it)."""

    device: str = setting("auto", "auto (CUDA when available, else CPU), cpu, cuda or cuda:N", run_only=True)
    threads: int = setting(0, "CPU threads for torch (0 = torch's default)", run_only=True, minimum=0)


def start_compute(settings: ComputeSettings) -> torch.device:
    """Apply ``threads`` and resolve ``device``: call it inside a task's ``run()``, never at import."""
    import torch

    if settings.threads:
        torch.set_num_threads(settings.threads)
    return resolve_device(settings.device)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``/``cuda``/``cuda:N`` as given."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"[compute] device = {name!r} is not a torch device; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"[compute] device = {name!r} but this machine has no CUDA GPU; "
                          "use --compute-device auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"[compute] device = {name!r} but this machine has {torch.cuda.device_count()} GPU(s); "
                          "use cuda:0 .. cuda:N-1 or auto")
    return device


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op on CPU, where fp32 keeps runs bit-reproducible."""
    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
