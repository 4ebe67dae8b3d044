"""Device choice, done lazily inside task ``run()`` methods (never at import or in
the Luigi scheduling process, so forked workers never inherit a CUDA context)."""

from __future__ import annotations

import contextlib

import torch

from pipeline.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``/``cuda``/``cuda:N`` as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device = {name!r} is not a torch device; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device = {name!r} but this machine has no CUDA GPU; use --device auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device = {name!r} but this machine has {torch.cuda.device_count()} GPU(s); "
                          "use cuda:0 .. cuda:N-1 or auto")
    return device


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op on CPU, where fp32 keeps runs bit-reproducible."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
