"""Offline triplet sampling: strategies chosen by name from a registry, their settings, a driver.

Importing this package registers the built-in strategies (``uniform``,
``semihard``, ``hard``, ``mixed``, ``batched``). :class:`ListSettings` holds every
``[TripletList]`` setting.
"""

from pipeline.sampling import (
    batched,  # noqa: F401  (registers "batched")
    mined,  # noqa: F401  (registers "semihard", "hard" and "mixed")
    uniform,  # noqa: F401  (registers "uniform")
)
from pipeline.sampling.base import (
    ClassMembers,
    ClassStrategy,
    EpochStrategy,
    SamplingContext,
    TripletBlock,
    TripletStrategy,
    available,
    get_strategy,
    register,
)
from pipeline.sampling.driver import TRIPLET_SCHEMA, sample_triplets
from pipeline.sampling.settings import BatchOptions, ListSettings, MinedOptions

__all__ = [
    "BatchOptions",
    "ClassMembers",
    "ClassStrategy",
    "EpochStrategy",
    "ListSettings",
    "MinedOptions",
    "SamplingContext",
    "TripletBlock",
    "TripletStrategy",
    "TRIPLET_SCHEMA",
    "available",
    "get_strategy",
    "register",
    "sample_triplets",
]
