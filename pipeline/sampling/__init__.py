"""Offline triplet sampling: one pluggable strategy per module, a registry, a driver.

Importing this package registers the built-in strategies. ``SETTINGS_CLASSES``
holds the dataclasses whose :func:`~pipeline.settings.setting` fields are the
``[TripletList]`` settings.
"""

from pipeline.sampling import (
    batched,  # noqa: F401  (registers "batched")
    hard,  # noqa: F401  (registers "hard")
    mixed,  # noqa: F401  (registers "mixed")
    semihard,  # noqa: F401  (registers "semihard")
    uniform,  # noqa: F401  (registers "uniform")
)
from pipeline.sampling.base import SamplingContext, TripletBlock, TripletStrategy
from pipeline.sampling.batch_options import BatchOptions
from pipeline.sampling.class_members import ClassMembers
from pipeline.sampling.driver import TRIPLET_SCHEMA, sample_triplets
from pipeline.sampling.list_settings import ListSettings
from pipeline.sampling.mined_options import MinedOptions
from pipeline.sampling.registry import available, get_strategy, register

SETTINGS_CLASSES = (ListSettings, MinedOptions, BatchOptions)

__all__ = [
    "BatchOptions",
    "ClassMembers",
    "ListSettings",
    "MinedOptions",
    "SETTINGS_CLASSES",
    "SamplingContext",
    "TripletBlock",
    "TripletStrategy",
    "TRIPLET_SCHEMA",
    "available",
    "get_strategy",
    "register",
    "sample_triplets",
]
