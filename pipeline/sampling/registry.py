"""Name -> strategy registry, so configs pick a strategy by name."""

from __future__ import annotations

import inspect
from typing import Callable

from pipeline.errors import ConfigError
from pipeline.sampling.base import TripletStrategy

_FACTORIES: dict[str, Callable[..., TripletStrategy]] = {}


def register(name: str) -> Callable[[Callable[..., TripletStrategy]], Callable[..., TripletStrategy]]:
    """Class/function decorator registering a strategy factory under ``name``."""

    def deco(factory: Callable[..., TripletStrategy]) -> Callable[..., TripletStrategy]:
        _FACTORIES[name] = factory
        return factory

    return deco


def available() -> list[str]:
    """Names of the registered strategies."""
    return sorted(_FACTORIES)


def get_strategy(name: str, **options: object) -> TripletStrategy:
    """Build the strategy registered as ``name``.

    ``options`` holds every sampling setting; each strategy takes the ones its
    factory accepts, so one config section serves all strategies.
    """
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ConfigError(
            f"unknown triplet strategy {name!r} (setting [TripletList] strategy); "
            f"choose one of: {', '.join(available())}"
        ) from None
    accepted = inspect.signature(factory).parameters
    return factory(**{k: v for k, v in options.items() if k in accepted and k not in ("name", "needs_embeddings")})
