"""The settings of a batch-structured list (strategy ``batched``), in ``[TripletList]``.

What each one does is told where it acts: :mod:`pipeline.sampling.batch_composition`
(classes, seeds, length, hard negatives) and :mod:`pipeline.sampling.batched`
(the listed triplets). Strings are converted to the setting's type (config files
and the command line give strings); a bad value raises ``ConfigError`` naming
``[TripletList] <name>``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from pipeline.errors import ConfigError
from pipeline.settings import setting

RULES = ("active", "semihard", "hard", "uniform")

# Why the two smallest counts matter, said instead of a bare minimum.
_REASONS = {
    "batch_seeds": "an anchor needs a positive, so use at least 2 seeds per class",
    "batch_classes": "an anchor needs a negative, so use at least 2 classes per batch",
}
# The order settings are checked in, so the first of several bad values is the one reported.
_COUNTED = ("image_passes", "hard_top", "triplets_per_anchor", "batch_seeds", "batch_classes")


@dataclass(frozen=True)
class BatchOptions:
    """Settings of a batch-structured list; the ``batched`` strategy subclasses it."""

    batch_classes: int = setting(10, "batched: classes per batch (P)", minimum=2)
    batch_seeds: int = setting(10, "batched: seed images per class and batch (K)", minimum=2)
    image_passes: int = setting(7, "batched: images forwarded per epoch, in training sets", minimum=1)
    hard_share: float = setting(1.0, "batched: share of seeds that bring a hard negative, in [0, 1]")
    hard_top: int = setting(10, "batched: hard negative drawn among this many nearest", minimum=1)
    triplets_per_anchor: int = setting(16, "batched: listed triplets per anchor", minimum=1)
    triplet_rule: str = setting("active", "batched: active, semihard, hard or uniform", choices=RULES)

    def __post_init__(self) -> None:
        settings = {f.name: f for f in fields(self) if "help" in f.metadata}
        for name, f in settings.items():
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, type(f.default)(value))  # frozen: set once, here
            except (TypeError, ValueError):
                raise ConfigError(f"[TripletList] {name} = {value!r} is not a {type(f.default).__name__}") from None
        for name in _COUNTED:
            value, minimum = getattr(self, name), settings[name].metadata["minimum"]
            if value < minimum:
                raise ConfigError(f"[TripletList] {name} = {value}; "
                                  + _REASONS.get(name, f"it must be at least {minimum}"))
        if not 0.0 <= self.hard_share <= 1.0:
            raise ConfigError(f"[TripletList] hard_share = {self.hard_share}; use a value in [0, 1]")
        if self.triplet_rule not in RULES:
            raise ConfigError(f"[TripletList] triplet_rule = {self.triplet_rule!r}; use one of {', '.join(RULES)}")
