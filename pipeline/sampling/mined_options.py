"""The settings every mined strategy (``semihard``, ``hard``, ``mixed``) accepts.

Each mined strategy takes all of them, so one ``[TripletList]`` section can
switch strategy without editing the other keys; unused ones are still
validated. Strings such as ``"64"`` are converted (config files and the command
line give strings), and a bad value raises ``ConfigError`` naming
``[TripletList] <name>``.

The user settings (made with :func:`~pipeline.settings.setting`, so they become
``TripletList`` parameters) choose the rules; the plain fields tune how the
work is done: ``band_pick`` (see :mod:`pipeline.sampling.semihard`),
``chunk_size`` (queries per candidate step, see :mod:`pipeline.sampling.negatives`),
``knn_backend`` and ``knn_device`` (passed to :func:`pipeline.knn.knn_search`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from pipeline.errors import ConfigError
from pipeline.settings import setting

POSITIVE_RULES = ("uniform", "farthest", "relevance")
CANDIDATE_RULES = ("pool", "knn")
BAND_PICKS = ("random", "nearest")
MINED_INNER = ("semihard", "hard")

_SECTION = "[TripletList]"


def _as_int(name: str, value: Any, minimum: int) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        as_int = int(value)
        if isinstance(value, float) and as_int != value:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"setting {_SECTION} {name} must be an integer, got {value!r}") from None
    if as_int < minimum:
        raise ConfigError(f"setting {_SECTION} {name} must be at least {minimum}, got {as_int}")
    return as_int


def _as_float(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> float:
    try:
        if isinstance(value, bool):
            raise TypeError
        as_float = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {_SECTION} {name} must be a number, got {value!r}") from None
    if not np.isfinite(as_float) or as_float > hi or as_float < lo or (lo_open and as_float == lo):
        bracket = "(" if lo_open else "["
        raise ConfigError(f"setting {_SECTION} {name} must lie in {bracket}{lo}, {hi}], got {value!r}")
    return as_float


def _as_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"setting {_SECTION} {name} must be one of {', '.join(choices)}; got {value!r}")
    return value


@dataclass(frozen=True)
class MinedOptions:
    """Settings shared by all mined strategies; the strategies subclass it."""

    positive: str = setting("uniform", "uniform, farthest or relevance (mined strategies)", choices=POSITIVE_RULES)
    candidates: str = setting("pool", "pool or knn (mined strategies)", choices=CANDIDATE_RULES)
    pool_size: int = setting(64, "candidates = pool: random negatives per query", minimum=1)
    knn_k: int = setting(100, "candidates = knn: nearest neighbours searched per query", minimum=1)
    mined_share: float = setting(0.5, "share of mined rows for strategy = mixed, in [0, 1]")
    mined_strategy: str = setting("semihard", "inner strategy of mixed", choices=MINED_INNER)
    relevance_cap: float = setting(0.9, "positive = relevance: weight cap quantile, in (0, 1]")
    band_pick: str = "random"
    chunk_size: int = 4096
    knn_backend: str = "auto"
    knn_device: str | None = None
    name: str = field(default="mined", init=False)
    needs_embeddings: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        minimum = {f.name: f.metadata.get("minimum") for f in fields(self)}
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen)
        set_("positive", _as_choice("positive", self.positive, POSITIVE_RULES))
        set_("candidates", _as_choice("candidates", self.candidates, CANDIDATE_RULES))
        set_("pool_size", _as_int("pool_size", self.pool_size, minimum["pool_size"]))
        set_("knn_k", _as_int("knn_k", self.knn_k, minimum["knn_k"]))
        set_("mined_share", _as_float("mined_share", self.mined_share, 0.0, 1.0))
        set_("mined_strategy", _as_choice("mined_strategy", self.mined_strategy, MINED_INNER))
        # A cap quantile of 0 would weigh every positive 0.
        set_("relevance_cap", _as_float("relevance_cap", self.relevance_cap, 0.0, 1.0, lo_open=True))
        set_("band_pick", _as_choice("band_pick", self.band_pick, BAND_PICKS))
        set_("chunk_size", _as_int("chunk_size", self.chunk_size, 1))
        if not isinstance(self.knn_backend, str):
            raise ConfigError(f"setting {_SECTION} knn_backend must be a string, got {self.knn_backend!r}")
        if self.knn_device is not None and not isinstance(self.knn_device, str):
            raise ConfigError(f"setting {_SECTION} knn_device must be a string or unset, got {self.knn_device!r}")
