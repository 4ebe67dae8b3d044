"""Offline triplet sampling: one pluggable strategy per module, a registry, a driver.

Importing this package registers the built-in strategies.
"""

from pipeline.sampling import uniform  # noqa: F401  (registers "uniform")
from pipeline.sampling import mined  # noqa: F401  (registers "semihard", "hard", "mixed")
from pipeline.sampling import batched  # noqa: F401  (registers "batched")
from pipeline.sampling.base import ClassLayout, SamplingContext, TripletBlock, TripletStrategy
from pipeline.sampling.driver import TRIPLET_SCHEMA, sample_triplets
from pipeline.sampling.registry import available, get_strategy, register

__all__ = [
    "ClassLayout",
    "SamplingContext",
    "TripletBlock",
    "TripletStrategy",
    "TRIPLET_SCHEMA",
    "available",
    "get_strategy",
    "register",
    "sample_triplets",
]
