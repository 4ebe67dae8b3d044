"""Declare a setting once: its default, help text, choices and whether it is run-only.

Settings live in frozen dataclasses beside the code that uses them
(``TrainSettings``, ``LossSettings``, ``ModelSettings``...). Each field is made with
:func:`setting`, and ``tasks/parameters.py`` turns the same fields into Luigi
parameters, so a default is never typed twice.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from pipeline.errors import ConfigError


def setting(default: Any, help: str = "", *, choices: Sequence[str] | None = None,  # noqa: A002
            run_only: bool = False, minimum: float | None = None) -> Any:
    """A dataclass field with the metadata a configuration front end needs.

    ``run_only`` marks knobs that change how a result is computed, not what it
    is (threads, block counts): they are left out of output identities and
    recorded settings. ``minimum`` and ``choices`` are checked by :func:`check`.
    """
    return dataclasses.field(default=default, metadata={"help": help, "choices": tuple(choices) if choices else None,
                                                        "run_only": run_only, "minimum": minimum})


def check(settings: Any, section: str) -> None:
    """Raise :class:`ConfigError` naming ``[section] name`` for a value outside its choices or minimum."""
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        choices, minimum = f.metadata.get("choices"), f.metadata.get("minimum")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"[{section}] {f.name} = {value!r}; use a finite number")
        if choices and value not in choices:
            raise ConfigError(f"[{section}] {f.name} = {value!r}; use one of {', '.join(choices)}")
        if minimum is not None and (not isinstance(value, (int, float)) or value < minimum):
            raise ConfigError(f"[{section}] {f.name} = {value!r}; it must be at least {minimum}")


def significant(settings: Any) -> dict[str, Any]:
    """The settings (fields made with :func:`setting`) of ``settings`` that shape results, by name:
    all but the run-only ones."""
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)
            if "help" in f.metadata and not f.metadata.get("run_only")}
